"""Background jobs for the dashboard: a queue, worker threads that own the device, progress, cancel.

Streamlit reruns a page script on every interaction and its own threads cannot call `st.*`, so
long computations run here, outside the script thread: a page submits a `JobSpec`, the worker runs
`vitlens.analyses.run` (which fills the disk cache), and the page polls the job's progress. One
manager serves every browser session of a server process, so identical requests from several users
join one job. Workers: `VITLENS_WORKERS` (default 1 — one job at a time on a GPU).

With `VITLENS_RANKS=N` (N > 1, e.g. the number of GPUs) the worker runs the analyses that shard
(hessian, landscape) as `torchrun --nproc-per-node N -m vitlens run ...`; rank 0 fills the same
cache, so the page finds the Result exactly as after an in-process job.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from .engine import JobSpec, request_id, run
from .errors import VitlensError

QUEUED, RUNNING, DONE, FAILED, CANCELLED = "queued", "running", "done", "failed", "cancelled"
SHARDED = ("hessian", "landscape")  # analyses that split their work over torchrun ranks


class JobCancelled(Exception):
    """Raised inside a running job (at its next progress update) when a user cancels it."""


@dataclass
class Job:
    id: str
    request: str
    spec: JobSpec
    state: str = QUEUED
    created: float = field(default_factory=time.time)
    started: float | None = None
    finished: float | None = None
    done: float = 0.0
    total: float = 0.0
    message: str = ""
    error: str | None = None
    from_cache: bool = False
    requests: int = 1  # how many submissions joined this job
    cancel_requested: bool = False
    process: subprocess.Popen | None = field(default=None, repr=False)

    @property
    def active(self) -> bool:
        return self.state in (QUEUED, RUNNING)

    @property
    def fraction(self) -> float:
        return self.done / self.total if self.total else 0.0

    def eta(self) -> float | None:
        """Seconds left at the rate so far (None until there is progress)."""
        if self.state != RUNNING or not self.started or self.done <= 0 or not self.total:
            return None
        elapsed = time.time() - self.started
        return elapsed / self.done * (self.total - self.done)

    def summary(self) -> dict:
        return dict(id=self.id, analysis=self.spec.analysis, model=self.spec.model, dataset=self.spec.dataset,
                    state=self.state, progress=round(self.fraction, 3), message=self.message,
                    eta_s=None if self.eta() is None else round(self.eta(), 1), error=self.error,
                    requests=self.requests, from_cache=self.from_cache,
                    seconds=round((self.finished or time.time()) - (self.started or self.created), 1))


class JobManager:
    def __init__(self, workers: int | None = None, keep: int = 200):
        workers = workers or int(os.environ.get("VITLENS_WORKERS", "1") or 1)
        self.workers = max(1, workers)
        self._executor = ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="vitlens-worker")
        self._lock = threading.Lock()
        self._jobs: dict[str, Job] = {}
        self._keep = keep

    def submit(self, spec: JobSpec) -> Job:
        """Queue SPEC, or join the queued/running job that computes the same request."""
        request = request_id(spec)
        with self._lock:
            for job in self._jobs.values():
                if job.request == request and job.active:
                    job.requests += 1
                    return job
            job = Job(id=uuid.uuid4().hex[:12], request=request, spec=spec)
            self._jobs[job.id] = job
            self._trim()
        self._executor.submit(self._run, job)
        return job

    def _run(self, job: Job) -> None:
        if job.cancel_requested:
            job.state, job.finished = CANCELLED, time.time()
            return
        job.state, job.started = RUNNING, time.time()

        def progress(done: float, total: float, message: str) -> None:
            if job.cancel_requested:
                raise JobCancelled()
            job.done, job.total, job.message = done, total, message

        try:
            ranks = int(os.environ.get("VITLENS_RANKS", "1") or 1)
            if ranks > 1 and job.spec.analysis in SHARDED:
                self._run_torchrun(job, ranks)
            else:
                _, job.from_cache = run(job.spec, progress=progress)
            job.state = DONE
        except JobCancelled:
            job.state = CANCELLED
        except VitlensError as err:
            job.state, job.error = FAILED, (str(err).splitlines() or ["error"])[0]
        except Exception as err:  # keep the server alive; show the error in one line
            first = (str(err).strip().splitlines() or [""])[0][:300]
            job.state, job.error = FAILED, f"internal error: {type(err).__name__}: {first}"
        finally:
            job.finished = time.time()

    def _run_torchrun(self, job: Job, ranks: int) -> None:
        """Run JOB over RANKS processes; rank 0 writes the Result into the cache."""
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(ranks), "-m", "vitlens",
               *run_arguments(job.spec)]
        job.message, job.total = f"running on {ranks} ranks (torchrun)", 1.0
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        job.process = proc
        _, err = proc.communicate()
        if job.cancel_requested:
            raise JobCancelled()
        if proc.returncode != 0:
            lines = [ln for ln in err.splitlines() if ln.startswith("vitlens: ")]
            message = lines[0].split(": ", 2)[-1] if lines else f"torchrun exited {proc.returncode}"
            raise VitlensError(message)
        job.done = 1.0

    def cancel(self, job_id: str) -> bool:
        """Ask a job to stop; a queued job never starts, a running one stops at its next update."""
        job = self._jobs.get(job_id)
        if job is None or not job.active:
            return False
        job.cancel_requested = True
        if job.process is not None and job.process.poll() is None:
            job.process.terminate()  # a torchrun job stops now, not at a progress update
        if job.state == QUEUED:
            job.state, job.finished = CANCELLED, time.time()
        return True

    def get(self, job_id: str) -> Job | None:
        return self._jobs.get(job_id)

    def find(self, spec: JobSpec) -> Job | None:
        """The most recent job for the same request as SPEC."""
        request = request_id(spec)
        matches = [j for j in self._jobs.values() if j.request == request]
        return max(matches, key=lambda j: j.created) if matches else None

    def jobs(self) -> list[Job]:
        return sorted(self._jobs.values(), key=lambda j: j.created, reverse=True)

    def wait(self, job: Job, timeout: float = 600.0) -> Job:
        """Block until JOB finishes (tests and scripts; pages poll instead)."""
        end = time.time() + timeout
        while job.active and time.time() < end:
            time.sleep(0.05)
        return job

    def _trim(self) -> None:
        finished = [j for j in self._jobs.values() if not j.active]
        for job in sorted(finished, key=lambda j: j.created)[:max(0, len(self._jobs) - self._keep)]:
            del self._jobs[job.id]


_MANAGER: JobManager | None = None
_MANAGER_LOCK = threading.Lock()


def manager() -> JobManager:
    """The process-wide job manager (shared by every dashboard session)."""
    global _MANAGER
    with _MANAGER_LOCK:
        if _MANAGER is None:
            _MANAGER = JobManager()
        return _MANAGER


def run_arguments(spec) -> list[str]:
    """`vitlens run ...` arguments that give back SPEC (`cli.spec_from_args`), for the torchrun launch."""
    args = ["run", spec.analysis, "--model", spec.model, "--model-args", json.dumps(spec.model_args),
            "--dataset", spec.dataset, "--split", spec.split,
            "--samples", "all" if spec.samples is None else str(spec.samples),
            "--batch-size", str(spec.batch_size), "--seed", str(spec.seed), "--device", spec.device,
            "--params", json.dumps(spec.params)]
    if spec.checkpoint:
        args += ["--checkpoint", spec.checkpoint]
    return args
