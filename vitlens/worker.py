"""`vitlens worker`: a process that takes jobs from the queue (`vitlens.jobs`) and runs them.

One job at a time (start one worker per GPU). The loop takes the next message (the interactive
lane first, then the heavy one unless `--lanes interactive`; highest priority first in each),
claims it (`claim:<id>:<attempt>`, once: a duplicate or outdated message is dropped), writes the
job's `run:` record (running, heartbeat), calls `engine.run` with a progress callback that writes
progress, honours Cancel and notices shutdown, and records done / failed / cancelled. A background
job asked to yield (`JobManager.make_room`) goes back to the queue at its next stop check. A heartbeat
thread refreshes the job's and the worker's heartbeat every `VITLENS_HEARTBEAT_S` seconds even
while a long step runs, and sweeps for the jobs of workers that died (`jobs.sweep_lost_jobs`):
such a job is retried once, then fails with "the worker stopped during the job".

SIGTERM / SIGINT (docker stop, Ctrl-C) or the death of the parent (`--parent-pid`, the embedded
workers of a dashboard): the running job stops at its next stop check (`progress.checkpoint`: every
batch of every Hessian-vector product, every grid point, every batch of a pass), its state goes back to
queued and its message back into the queue, and the worker exits. The cache writes whole entries
only, so nothing is half-written; the landscape analysis resumes a partly done grid from its
cached points.
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

from .declarations import LANES, get_analysis
from .engine import cached_result, run
from .errors import VitlensError
from .jobs import (CANCELLED, DONE, FAILED, FINAL, QUEUED, RUNNING, JobCancelled, JobYielded, Queue, Records,
                   env_number, message_args, stale_after, sweep_lost_jobs)
from .request import JobSpec, request_arguments


class WorkerStopping(Exception):
    """Raised inside a running job (at its next stop check) when the worker shuts down."""

    requeued = "back in the queue (a worker stopped); it continues on restart"


class JobSuperseded(Exception):
    """Raised inside a running job when a sweep gave it to another attempt (this worker was silent
    for longer than VITLENS_JOB_STALE_S); the job's records are the other attempt's now."""


class Worker:
    def __init__(self, location: str | None = None, name: str | None = None, parent_pid: int | None = None,
                 poll: float = 0.2, heartbeat: float | None = None, once: bool = False, lanes: str = "all"):
        if lanes not in ("all", "interactive"):
            raise VitlensError(f"--lanes must be all or interactive, got {lanes!r}")
        self.queue = Queue(location)
        self.lanes = LANES if lanes == "all" else ("interactive",)
        self.stale_s = stale_after()
        self._suspects: dict = {}
        self._last_sweep = 0.0
        self.records = Records(self.queue)
        self.name = name or f"{socket.gethostname()}-{os.getpid()}"
        self.parent_pid = parent_pid
        self.poll = poll
        self.beat = heartbeat if heartbeat is not None else env_number("VITLENS_HEARTBEAT_S", 2.0, float)
        self.once = once  # tests: exit when the queue is empty
        self.stopping = threading.Event()
        self.job_id: str | None = None
        self._run: dict = {}
        self._lock = threading.Lock()
        self._process: subprocess.Popen | None = None
        self.ranks = env_number("VITLENS_RANKS", 1)

    # ---- lifetime

    def _on_signal(self, signum, frame) -> None:
        self.stop()

    def stop(self) -> None:
        self.stopping.set()
        proc = self._process
        if proc is not None and proc.poll() is None:
            proc.terminate()  # a torchrun job stops now, not at a progress update

    def _parent_gone(self) -> bool:
        return self.parent_pid is not None and os.getppid() != self.parent_pid

    def serve(self) -> int:
        """Take and run jobs until stopped. Returns the exit status (0)."""
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)
        beater = threading.Thread(target=self._heartbeat_loop, name="vitlens-heartbeat", daemon=True)
        beater.start()
        print(f"vitlens worker {self.name}: serving {self.queue.location}", file=sys.stderr, flush=True)
        try:
            while not self.stopping.is_set():
                if self._parent_gone():
                    self.stop()
                    break
                try:
                    _, task = self._take()
                except (ValueError, TypeError, KeyError) as err:  # not a vitlens message (never unpickled)
                    print(f"vitlens worker {self.name}: dropped a bad queue message: {err}", file=sys.stderr, flush=True)
                    continue
                if task is None:
                    if self.once:
                        break
                    self.stopping.wait(self.poll)
                    continue
                self.execute(task)
        finally:
            self.records.delete("worker", self.name)
        print(f"vitlens worker {self.name}: stopped {time.strftime('%H:%M:%S')}", file=sys.stderr, flush=True)
        return 0

    def _take(self):
        """(lane, message) of the next message, from the first lane that has one, or (None, None);
        ValueError for a message that is not a job's."""
        for lane in self.lanes:
            task = self.queue.lanes[lane].take()
            if task is not None:
                message_args(task)
                return lane, task
        return None, None

    def _heartbeat_loop(self) -> None:
        while not self.stopping.wait(self.beat):
            self._write_heartbeat()
            if time.time() - self._last_sweep >= max(self.beat, self.stale_s / 4):
                self._last_sweep = time.time()
                self.sweep()

    def sweep(self) -> None:
        try:
            for job_id in sweep_lost_jobs(self.queue, self.records, self.stale_s, self._suspects):
                print(f"vitlens worker {self.name}: recovered job {job_id} of a worker that stopped",
                      file=sys.stderr, flush=True)
        except Exception as err:  # as for the heartbeat: the next sweep retries
            print(f"vitlens worker {self.name}: sweep failed: {err}", file=sys.stderr, flush=True)

    def _write_heartbeat(self) -> None:
        try:
            now = time.time()
            with self._lock:
                if self.job_id is not None and self._run.get("state") == RUNNING:
                    self._run["heartbeat"] = now
                    self.records.put("run", self.job_id, self._run)
                self.records.put("worker", self.name, dict(pid=os.getpid(), host=socket.gethostname(),
                                                           job=self.job_id, heartbeat=now, lanes=list(self.lanes)))
        except Exception as err:  # a busy store must not kill the worker; the next beat retries
            print(f"vitlens worker {self.name}: heartbeat failed: {err}", file=sys.stderr, flush=True)

    def _save(self, **changes) -> None:
        with self._lock:
            self._run.update(changes, heartbeat=time.time())
            self.records.put("run", self.job_id, self._run)

    # ---- one job

    def execute(self, task) -> None:
        spec_json, job_id, attempt = message_args(task)
        job = self.records.get("job", job_id)
        if job is None:
            return  # trimmed or unknown: nothing to report to
        may_yield = bool(job.get("background"))  # only a background job is ever asked to (`make_room`)
        previous = self.records.get("run", job_id) or {}
        if previous.get("attempt", 0) != attempt or previous.get("state", QUEUED) in FINAL:
            return  # an outdated message (a sweep queued a newer attempt) or the job has ended
        if not self.records.claim("claim", f"{job_id}:{attempt}", self.name):
            return  # a duplicate message: another worker (or a sweep) has this attempt
        if self.records.get("cancel", job_id) is not None:
            self.records.put("run", job_id, dict(previous, state=CANCELLED, finished=time.time(),
                                                 message="cancelled before it started"))
            return
        self.job_id = job_id
        self._run = dict(state=RUNNING, started=time.time(), finished=None, done=0.0, total=0.0,
                         message="starting", error=None, from_cache=False, worker=self.name,
                         runs=previous.get("runs", 0) + 1, attempt=attempt, lost=previous.get("lost", 0))
        self._save()
        self._write_heartbeat()  # the worker's record names its job now: `make_room` sees it busy
        last_check = [0.0]

        last_save = [0.0]

        def interrupt() -> None:
            """Raise when the job must stop (shutdown, Cancel, another attempt); the store is read at
            most four times a second."""
            if self.stopping.is_set() or self._parent_gone():
                raise WorkerStopping()
            now = time.time()
            if now - last_check[0] < 0.25:
                return
            last_check[0] = now
            if self.records.get("cancel", job_id) is not None:
                raise JobCancelled()
            if may_yield and self.records.get("yield", job_id) is not None:
                raise JobYielded()
            if (self.records.get("run", job_id) or {}).get("attempt", 0) != attempt:
                raise JobSuperseded()

        def progress(done: float, total: float, message: str) -> None:
            interrupt()
            now = time.time()
            if now - last_save[0] >= 0.25:  # at most four progress writes a second
                last_save[0] = now
                self._save(done=float(done), total=float(total), message=str(message))

        try:
            spec = JobSpec.from_json(spec_json)
            if self.ranks > 1 and get_analysis(spec.analysis).shards:
                self._run_torchrun(spec, job_id)
                from_cache = False
            else:
                _, from_cache = run(spec, progress=progress, interrupt=interrupt)
                if cached_result(spec) is None:  # a full disk: the page could never show it, so say so
                    raise VitlensError("the Result was computed but the cache could not store it (a full disk?); "
                                       "see the worker's log, free space and press Try again")
            self._save(state=DONE, finished=time.time(), from_cache=from_cache,
                       done=self._run.get("total") or 1.0, total=self._run.get("total") or 1.0, message="done")
        except (WorkerStopping, JobYielded) as stopped:  # back in the queue; it continues from what it cached
            self._save(state=QUEUED, attempt=attempt + 1, message=stopped.requeued)
            self.queue.put(spec, job_id, task.priority or 0, attempt + 1)
        except JobSuperseded:
            print(f"vitlens worker {self.name}: job {job_id} went to another attempt; stopped it",
                  file=sys.stderr, flush=True)
        except JobCancelled:
            self._save(state=CANCELLED, finished=time.time(), message="cancelled")
        except VitlensError as err:
            self._save(state=FAILED, finished=time.time(), error=(str(err).splitlines() or ["error"])[0])
        except Exception as err:  # keep the worker alive; show the error in one line
            first = (str(err).strip().splitlines() or [""])[0][:300]
            self._save(state=FAILED, finished=time.time(), error=f"internal error: {type(err).__name__}: {first}")
        finally:
            if may_yield:
                self.records.delete("yield", job_id)  # asked or not, it has stopped: no stale request left
            with self._lock:
                self.job_id, self._run = None, {}

    def _run_torchrun(self, spec, job_id: str) -> None:
        """Run SPEC over `VITLENS_RANKS` processes; rank 0 writes the Result into the cache."""
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(self.ranks), "-m", "vitlens",
               *request_arguments(spec)]
        self._save(message=f"running on {self.ranks} ranks (torchrun)", total=1.0)
        with tempfile.TemporaryFile("w+") as err:
            self._process = proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err, text=True)
            try:
                while proc.poll() is None:
                    if self.stopping.is_set() or self._parent_gone():
                        proc.terminate()
                        proc.wait(5)
                        raise WorkerStopping()
                    if self.records.get("cancel", job_id) is not None:
                        proc.terminate()
                        proc.wait(5)
                        raise JobCancelled()
                    time.sleep(0.25)
            finally:
                self._process = None
                if proc.poll() is None:
                    proc.kill()
            if self.stopping.is_set():
                raise WorkerStopping()
            if proc.returncode != 0:
                err.seek(0)
                lines = [ln for ln in err.read().splitlines() if ln.startswith("vitlens: ")]
                message = lines[0].split(": ", 2)[-1] if lines else f"torchrun exited {proc.returncode}"
                raise VitlensError(message)


def serve(location: str | None = None, name: str | None = None, parent_pid: int | None = None,
          once: bool = False, exit_now: bool = False, lanes: str = "all") -> int:
    """`vitlens worker`: serve the configured queue until SIGTERM.

    EXIT_NOW (the CLI): end the process as soon as the loop stops. Every record and cache entry is
    committed by then; skipping the interpreter's teardown (seconds with torch loaded on a busy
    machine) keeps the stop well inside docker's 10 s grace period."""
    code = Worker(location, name=name, parent_pid=parent_pid, once=once, lanes=lanes).serve()
    if exit_now:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    return code

