"""The dashboard's side of the queue: `JobManager` submits, joins, polls and cancels jobs.

A page submits a `JobSpec`; `JobManager.submit` checks the limits (`vitlens.jobs.limits`), joins the
queued/running job of an identical request (`engine.request_id`) or queues a new one in the
analysis' lane; the page polls the job's record (state, progress, time left) and may cancel it.
Results land in the disk cache, so a page shows them at once. In a lane, each job a session already
has queued lowers its next one (round-robin between sessions). A background job (one the dashboard
starts unasked: the landing page's scoreboard) comes after every user's job and steps aside when a
user's job needs its worker (`make_room`).

The embedded worker processes of a one-machine install (started, niced, stopped at exit) are
`vitlens.jobs.supervisor`'s; a manager owns its set (`JobManager.embedded`).
"""
from __future__ import annotations

import os
import subprocess
import threading
import time
import uuid

from ..declarations import LANES
from ..store.keys import request_id
from ..errors import VitlensError
from ..request import JobSpec
from .limits import Limits
from .queue import Queue, lane_of, queue_location
from .records import CANCELLED, QUEUED, Job, Records, priority_of, stale_after
from .supervisor import WORKER_NICE, EmbeddedWorkers, mark_dashboard_process, stop_at_exit

# WORKER_NICE and mark_dashboard_process are the supervisor's, importable from here as before
__all__ = ["WORKER_NICE", "JobManager", "is_admin", "manager", "mark_dashboard_process"]


class JobManager:
    """Submit, join, poll and cancel jobs of one queue; optionally runs embedded worker processes
    (`EMBEDDED_WORKERS`: how many take from both lanes; None: from the environment, see
    `vitlens.jobs.supervisor`)."""

    def __init__(self, location: str | None = None, embedded_workers: int | None = None, keep: int = 200):
        self.queue = Queue(location)
        self.location = self.queue.location
        self.records = Records(self.queue)
        self.limits = Limits.from_env()
        self._lock = threading.Lock()
        self._keep = keep
        self.embedded = EmbeddedWorkers(self.location)
        self.embedded.start_configured(embedded_workers)

    # ---- submit / join

    def submit(self, spec: JobSpec, session: str = "", request: str | None = None, background: bool = False) -> Job:
        """Queue SPEC, or join the queued/running job that computes the same request.

        BACKGROUND: a job nobody asked for yet (the landing page's scoreboard): it runs at the lowest
        priority and yields its worker to a user's job (`make_room`). A user's submission that joins
        a background job makes it a user's job. Raises VitlensError (one line) when SPEC or the queue
        is over a limit."""
        self.limits.check(spec)
        request = request or request_id(spec)
        with self._lock:
            current = self._latest(request)
            if current is not None and current.active:
                job = self.records.get("job", current.id)
                job["requests"] = job.get("requests", 1) + 1
                waiting = list(job.get("sessions") or [job.get("session", "")])
                if session not in waiting:
                    waiting.append(session)
                job["sessions"] = waiting
                if not background:
                    job["background"] = current.background = False  # somebody asked for it now
                self.records.put("job", current.id, job)
                current.requests, current.sessions = job["requests"], waiting
                return current
            active = [j for j in self.jobs() if j.active]
            if len(active) >= self.limits.total:
                raise VitlensError(f"the job queue is full ({len(active)} jobs, limit {self.limits.total}, "
                                   "VITLENS_MAX_JOBS); try again when some have finished")
            mine = [j for j in active if j.session == session]
            if len(mine) >= self.limits.per_session:
                raise VitlensError(f"you have {len(mine)} jobs queued or running (limit {self.limits.per_session}, "
                                   "VITLENS_MAX_JOBS_PER_SESSION); wait for one or cancel one on the Jobs page")
            job_id = uuid.uuid4().hex[:12]
            priority = priority_of(spec, len(mine), background)
            record = dict(id=job_id, request=request, spec=spec.to_dict(), session=session, created=time.time(),
                          requests=1, priority=priority, sessions=[session], background=background)
            self.records.put("job", job_id, record)
            self.records.put("run", job_id, dict(state=QUEUED, message="waiting for a worker"))
            self.records.put("request", request, job_id)
            self.enqueue(job_id, spec, priority)
            self._trim()
        if not background:
            self.make_room(lane_of(spec))
        return self.get(job_id)

    def make_room(self, lane: str) -> list[str]:
        """A user's job waits in LANE: when no worker that takes LANE is idle, every background job
        running on such a worker is asked to yield (a `yield` record): at its next stop check it
        goes back to the queue, behind the user's job, and later continues from what it cached (the
        findings' sub-results, the landscape's grid points). Returns the ids asked."""
        able = [w for w in self.workers() if lane in (w.get("lanes") or LANES)]
        if not able or any(not w.get("job") for w in able):
            return []  # an idle worker takes the user's job at once (or no worker has checked in)
        asked = []
        for w in able:
            job = self.get(w["job"])
            if job is not None and job.background and job.active:
                self.records.put("yield", job.id, time.time())
                asked.append(job.id)
        return asked

    def enqueue(self, job_id: str, spec: JobSpec, priority: int) -> None:
        self.queue.put(spec, job_id, priority, 0)

    def _latest(self, request: str) -> Job | None:
        job_id = self.records.get("request", request)
        return self.get(job_id) if isinstance(job_id, str) else None

    # ---- read

    def get(self, job_id: str) -> Job | None:
        job = self.records.get("job", job_id)
        if not isinstance(job, dict):
            return None
        return Job.from_records(job, self.records.get("run", job_id),
                                self.records.get("cancel", job_id) is not None, stale_after())

    def find(self, spec: JobSpec, request: str | None = None) -> Job | None:
        """The most recent job for the same request as SPEC (REQUEST: its `request_id`, when known)."""
        return self._latest(request or request_id(spec))

    def jobs(self) -> list[Job]:
        jobs, runs = self.records.all("job"), self.records.all("run")
        cancels, stale = self.records.all("cancel"), stale_after()
        out = []
        for job_id, job in jobs.items():
            try:
                out.append(Job.from_records(job, runs.get(job_id), job_id in cancels, stale))
            except (KeyError, TypeError):
                continue  # a record not written by this version: skip it
        return sorted(out, key=lambda j: j.created, reverse=True)

    def workers(self) -> list[dict]:
        """The workers whose heartbeat is fresh (name, pid, host, job, heartbeat)."""
        now, stale = time.time(), stale_after()
        return [dict(w, name=name) for name, w in self.records.all("worker").items()
                if isinstance(w, dict) and now - w.get("heartbeat", 0) <= stale]

    def pending(self) -> int:
        """Messages waiting in the queue (both lanes)."""
        return self.queue.pending_count()

    def wait(self, job: Job, timeout: float = 600.0, poll: float = 0.1) -> Job:
        """Block until JOB finishes (tests and scripts; pages poll instead). Returns its last snapshot."""
        end = time.time() + timeout
        while True:
            job = self.get(job.id) or job
            if not job.active or time.time() > end:
                return job
            time.sleep(poll)

    # ---- cancel

    def cancel(self, job_id: str, session: str | None = None) -> bool:
        """Withdraw SESSION's interest in a job; the job stops only when nobody is left waiting for it
        (identical requests join one job). An admin (`VITLENS_ADMINS`), or SESSION None (the CLI, a
        test), stops it at once. A queued job never starts; a running one stops at its next update.
        False when the job has ended or SESSION is not waiting for it."""
        job = self.get(job_id)
        if job is None or not job.active:
            return False
        if session is not None and not is_admin(session):
            with self._lock:
                record = self.records.get("job", job_id) or {}
                waiting = list(record.get("sessions") or [record.get("session", "")])
                if session not in waiting:
                    return False  # another user's job: not theirs to stop
                waiting.remove(session)
                self.records.put("job", job_id, dict(record, sessions=waiting))
            if waiting:
                return True  # others still wait for it: it runs on for them
        self.records.put("cancel", job_id, time.time())
        if job.state == QUEUED:
            run = self.records.get("run", job_id) or {}
            if run.get("state", QUEUED) == QUEUED:
                self.records.put("run", job_id, dict(run, state=CANCELLED, finished=time.time(),
                                                     message="cancelled before it started"))
        return True

    def _trim(self) -> None:
        jobs = self.jobs()
        finished = [j for j in jobs if not j.active]
        old = sorted(finished, key=lambda j: j.created)[:max(0, len(jobs) - self._keep)]
        reaps = list(self.records.all("reap")) if old else []  # keyed <id>:<attempt>:<heartbeat>
        for job in old:
            for kind in ("job", "run", "cancel"):
                self.records.delete(kind, job.id)
            for attempt in range(job.attempt + 1):
                self.records.delete("claim", f"{job.id}:{attempt}")
            for name in reaps:
                if name.startswith(f"{job.id}:"):
                    self.records.delete("reap", name)
            if self.records.get("request", job.request) == job.id:
                self.records.delete("request", job.request)

    # ---- embedded workers (`vitlens.jobs.supervisor`)

    @property
    def _workers(self) -> list[subprocess.Popen]:
        """The embedded worker processes still running (or not yet reaped)."""
        return self.embedded.procs

    def start_workers(self, count: int, lanes: str = "all") -> None:
        """Start COUNT `vitlens worker` subprocesses on this queue, taking from LANES ("all" or
        "interactive"); they exit when this process does."""
        self.embedded.start(count, lanes)

    def stop_workers(self, timeout: float = 3.0) -> None:
        """SIGTERM the embedded workers (their running job goes back to the queue); wait up to TIMEOUT."""
        self.embedded.stop(timeout)

    def close(self, timeout: float = 3.0) -> None:
        self.stop_workers(timeout)


def is_admin(session: str) -> bool:
    """SESSION is a signed-in address on `VITLENS_ADMINS` (comma-separated): it may stop any job."""
    admins = {a.strip().lower() for a in os.environ.get("VITLENS_ADMINS", "").split(",") if a.strip()}
    return session.startswith("user:") and session[len("user:"):] in admins


_MANAGER: JobManager | None = None
_MANAGER_LOCK = threading.Lock()


def manager() -> JobManager:
    """The process-wide job manager of the configured queue (shared by every dashboard session).

    On the embedded SQLite queue it starts the worker subprocesses on first use. When the queue
    location changes (another VITLENS_CACHE_DIR or VITLENS_QUEUE), the previous manager's embedded
    workers are stopped and a new manager is made."""
    global _MANAGER
    location = queue_location()
    with _MANAGER_LOCK:
        if _MANAGER is None or _MANAGER.location != location:
            if _MANAGER is not None:
                _MANAGER.close(timeout=0.0)
            _MANAGER = JobManager(location)
            stop_at_exit(_MANAGER.embedded)  # its workers stop when this process exits
        return _MANAGER

