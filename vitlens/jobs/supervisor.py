"""The embedded workers of a one-machine install: the `vitlens worker` subprocesses a dashboard
process starts on its own queue, runs at a lower CPU priority, and stops when it exits.

On the SQLite queue the dashboard starts `VITLENS_WORKERS` (default 1) workers that take from both
lanes and `VITLENS_INTERACTIVE_WORKERS` (default 1) that take only quick views, so a view does not
wait for a running landscape (`VITLENS_EMBEDDED_WORKERS=0` when workers run elsewhere, e.g. the
compose `worker` service). They run at nice +5, below the dashboard's own process; `vitlens
dashboard` starts them with the server. `vitlens.jobs.manager` owns them (`JobManager.embedded`);
this module knows nothing of jobs.
"""
from __future__ import annotations

import atexit
import os
import subprocess
import sys
import time
from pathlib import Path

from ..store.private import cache_dir
from .limits import env_number
from .queue import is_redis

WORKER_NICE = 5


class EmbeddedWorkers:
    """The `vitlens worker` subprocesses started on the queue at LOCATION (they exit when this process does)."""

    def __init__(self, location: str):
        self.location = location
        self.procs: list[subprocess.Popen] = []

    def start_configured(self, count: int | None = None) -> None:
        """Start COUNT workers that take from both lanes (None: `VITLENS_EMBEDDED_WORKERS`, whose
        default is `VITLENS_WORKERS` on SQLite and 0 on Redis) and, when COUNT > 0,
        `VITLENS_INTERACTIVE_WORKERS` that take only quick views. Every count is read before any
        worker starts (a bad value starts none)."""
        if count is None:
            default = 0 if is_redis(self.location) else env_number("VITLENS_WORKERS", 1)
            count = env_number("VITLENS_EMBEDDED_WORKERS", default)
        if count > 0:
            interactive = env_number("VITLENS_INTERACTIVE_WORKERS", 1)  # a bad value: no process started yet
            self.start(count)
            self.start(interactive, lanes="interactive")

    def start(self, count: int, lanes: str = "all") -> None:
        """Start COUNT `vitlens worker` subprocesses on this queue, taking from LANES ("all" or
        "interactive"); they exit when this process does."""
        log_dir = Path(self.location).parent if not is_redis(self.location) else cache_dir()
        env = dict(os.environ, VITLENS_QUEUE=self.location if is_redis(self.location) else f"sqlite://{self.location}")
        for n in range(count):
            name = f"embedded-{os.getpid()}-{lanes}-{n}"
            log = open(log_dir / f"worker-{name}.log", "ab")
            cmd = [sys.executable, "-m", "vitlens", "worker", "--parent-pid", str(os.getpid()),
                   "--name", name, "--lanes", lanes]
            self.procs.append(subprocess.Popen(cmd, env=env, stdin=subprocess.DEVNULL, stdout=log,
                                               stderr=subprocess.STDOUT, preexec_fn=_lower_priority))
            log.close()

    def stop(self, timeout: float = 3.0) -> None:
        """SIGTERM the workers (their running job goes back to the queue); wait up to TIMEOUT."""
        for proc in self.procs:
            if proc.poll() is None:
                proc.terminate()
        end = time.time() + timeout
        for proc in self.procs:
            try:
                proc.wait(max(0.0, end - time.time()))
            except subprocess.TimeoutExpired:
                pass  # it notices our exit on its own and stops within its grace period
        self.procs = [p for p in self.procs if p.poll() is None]


def _lower_priority() -> None:
    """In an embedded worker before it starts: a lower CPU priority than the dashboard (nice +5), so
    the pages stay quick while jobs compute on the same cores (the server itself needs little: 0.14
    cores in the load scenario, benchmarks/README.md)."""
    try:
        os.nice(WORKER_NICE)
    except (AttributeError, OSError):
        pass  # no nice (Windows) or not allowed: the same priority as before


_AT_EXIT: EmbeddedWorkers | None = None


def stop_at_exit(workers: EmbeddedWorkers) -> None:
    """WORKERS (those of the process-wide job manager, `vitlens.jobs.manager.manager`) are the ones
    stopped when this process exits, in place of any set before."""
    global _AT_EXIT
    _AT_EXIT = workers


_DASHBOARD_PROCESS = False


def mark_dashboard_process() -> None:
    """`vitlens dashboard` runs Streamlit's server in this process (see `_in_streamlit_server`)."""
    global _DASHBOARD_PROCESS
    _DASHBOARD_PROCESS = True


def _in_streamlit_server() -> bool:
    """True in a `streamlit run` or `vitlens dashboard` server process (not under AppTest or in a script)."""
    command = getattr(sys, "orig_argv", [])[:4]  # Streamlit rewrites sys.argv to the page script
    return _DASHBOARD_PROCESS or (
        "streamlit" in sys.modules and any(Path(arg).name in ("streamlit", "streamlit.exe") for arg in command))


@atexit.register
def _stop_embedded_workers() -> None:
    """At exit: SIGTERM the embedded workers without waiting (each re-queues its job and exits in
    well under a second; one that misses the signal notices its parent is gone).

    In the dashboard server (after Streamlit's own clean shutdown on SIGTERM) the process then ends
    at once: the interpreter's teardown of torch and Streamlit took over 5 s on a busy machine, and
    every job record and cache entry is committed already. VITLENS_FAST_EXIT=0 keeps the teardown."""
    if _AT_EXIT is None:
        return
    _AT_EXIT.stop(timeout=0.0)
    if os.environ.get("VITLENS_FAST_EXIT", "1") != "0" and _in_streamlit_server():
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)
