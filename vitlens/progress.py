"""Progress reporting for anything that runs longer than a second.

`Progress` counts steps, estimates the time left from the rate so far, prints a bar to stderr
(CLI) and forwards each update to an optional callback (the dashboard's job worker writes it to
the cache so pages can poll it).
"""
from __future__ import annotations

import sys
import time
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Callable

ProgressCallback = Callable[[float, float, str], None]


class Progress:
    def __init__(self, total: float, desc: str = "", callback: ProgressCallback | None = None,
                 stream=None, min_interval: float = 0.5):
        self.total, self.desc, self.callback = max(float(total), 1.0), desc, callback
        self.stream = stream
        self.done = 0.0
        self.start = time.monotonic()
        self._last_print = 0.0
        self.min_interval = min_interval

    def eta(self) -> float | None:
        """Seconds left at the rate so far (None before the first step)."""
        if self.done <= 0:
            return None
        elapsed = time.monotonic() - self.start
        return elapsed / self.done * (self.total - self.done)

    def update(self, steps: float = 1.0, message: str = "") -> None:
        checkpoint()  # every progress update is also a stop point (a findings sub-request's too)
        self.done = min(self.done + steps, self.total)
        if self.callback is not None:
            self.callback(self.done, self.total, message or self.desc)
        now = time.monotonic()
        if self.stream is not None and (now - self._last_print >= self.min_interval or self.done >= self.total):
            self._last_print = now
            self._print(message)

    def _print(self, message: str) -> None:
        frac = self.done / self.total
        bar = "#" * int(frac * 24)
        eta = self.eta()
        left = f" {eta:5.1f}s left" if eta is not None and self.done < self.total else ""
        elapsed = time.monotonic() - self.start
        line = f"{self.desc} [{bar:<24}] {self.done:g}/{self.total:g} {elapsed:5.1f}s{left} {message}".rstrip()
        if getattr(self.stream, "isatty", lambda: False)():
            end = "\n" if self.done >= self.total else ""
            self.stream.write("\r" + line + end)
        else:
            self.stream.write(line + "\n")
        self.stream.flush()


def cli_progress(total: float, desc: str, callback: ProgressCallback | None = None) -> Progress:
    """A Progress that prints to stderr."""
    return Progress(total, desc, callback, stream=sys.stderr)


# ----------------------------------------------------------------------------- stop points

_INTERRUPT: ContextVar[Callable[[], None] | None] = ContextVar("vitlens_interrupt", default=None)


def checkpoint() -> None:
    """A point inside a long loop (each Hessian-vector product, each batch of one) where a running
    job may be stopped: the worker's check raises there when it shuts down (SIGTERM) or the job is
    cancelled, so a job stops within one step instead of at its next progress update. A no-op
    outside a worker."""
    check = _INTERRUPT.get()
    if check is not None:
        check()


def current_interrupt() -> Callable[[], None] | None:
    """The stop check in force (a sub-request run inside a job keeps it)."""
    return _INTERRUPT.get()


@contextmanager
def interruptible(check: Callable[[], None] | None):
    """Run the block with CHECK as what `checkpoint()` calls (it raises to stop the job)."""
    token = _INTERRUPT.set(check)
    try:
        yield
    finally:
        _INTERRUPT.reset(token)
