"""Job records and their recovery.

Records are JSON bytes in the queue store's key-value storage (never pickles): `job:<id>` (written
by the submitter: spec, session, joins), `run:<id>` (written by the worker: state, progress,
heartbeat, error), `cancel:<id>`, `request:<hash>` (the latest job of a request), `worker:<name>` (a
live worker's heartbeat), `claim:<id>:<attempt>` (which worker took a message; written once with the
store's put-if-empty, so a duplicate message never runs a job twice), `reap:<id>:<attempt>:<heartbeat>`
(which sweep acted on a lost job's record).

A worker that dies never leaves a job "running" forever. Every worker sweeps the records
(`sweep_lost_jobs`, from its heartbeat thread): a running job whose heartbeat is older than
`VITLENS_JOB_STALE_S` is retried once (a new attempt in its lane; the landscape resumes its cached
grid points), and fails with "the worker stopped during the job" when it is lost a second time. A
queued job whose message is in no lane at two sweeps `VITLENS_JOB_STALE_S` apart (a worker took
it and died before marking it running) is queued again; that costs no retry.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass, field

from ..request import JobSpec
from .limits import env_number
from .queue import Queue

QUEUED, RUNNING, DONE, FAILED, CANCELLED = "queued", "running", "done", "failed", "cancelled"
ACTIVE = (QUEUED, RUNNING)
FINAL = (DONE, FAILED, CANCELLED)
PREFIX = "vitlens:"
STALE_MESSAGE = "the worker stopped during the job twice (no heartbeat for {:.0f}s); press Try again"
RETRY_MESSAGE = "the worker stopped during the job; it is retried once when a worker is free"
REQUEUED_MESSAGE = "a worker took it and stopped before starting it; back in the queue"


class JobCancelled(Exception):
    """Raised inside a running job (at its next stop check) when the last user waiting for it cancels it."""


class JobYielded(Exception):
    """Raised inside a running background job (at its next stop check) when a user's job waits for its
    worker: the job goes back to the queue and continues from what it cached (`JobManager.make_room`)."""

    requeued = "paused for a user's job; continues after it"


BACKGROUND_PRIORITY = -1000  # below every user's job (a session's tenth queued job is -90)


def stale_after() -> float:
    """Seconds without a heartbeat after which a running job counts as failed."""
    return env_number("VITLENS_JOB_STALE_S", 60.0, float)


class Records:
    """JSON records in the queue store's key-value storage (never pickles)."""

    def __init__(self, queue: Queue):
        self.storage = queue.storage

    def put(self, kind: str, name: str, record) -> None:
        self.storage.put_data(f"{PREFIX}{kind}:{name}", json.dumps(record).encode())

    def get(self, kind: str, name: str):
        raw = self.storage.peek_data(f"{PREFIX}{kind}:{name}")
        return self._load(raw)

    def delete(self, kind: str, name: str) -> None:
        self.storage.delete_data(f"{PREFIX}{kind}:{name}")

    def claim(self, kind: str, name: str, holder: str) -> bool:
        """Write `kind:name` only if nobody has (atomic in SQLite and Redis); True if we did."""
        return bool(self.storage.put_if_empty(f"{PREFIX}{kind}:{name}", json.dumps(holder).encode()))

    def all(self, kind: str) -> dict:
        head = f"{PREFIX}{kind}:"
        items = self.storage.result_items()
        return {k[len(head):]: rec for k, v in items.items()
                if k.startswith(head) and (rec := self._load(v)) is not None}

    @staticmethod
    def _load(raw):
        if raw is None or not isinstance(raw, (bytes, str)):
            return None
        try:
            return json.loads(raw)
        except ValueError:
            return None


@dataclass
class Job:
    """A snapshot of one job's records (refresh with `JobManager.get`)."""

    id: str
    request: str
    spec: JobSpec
    state: str = QUEUED
    session: str = ""
    created: float = field(default_factory=time.time)
    started: float | None = None
    finished: float | None = None
    done: float = 0.0
    total: float = 0.0
    message: str = ""
    error: str | None = None
    from_cache: bool = False
    requests: int = 1  # how many submissions joined this job
    sessions: list = field(default_factory=list)  # who is waiting for it (submitter and joiners, until they cancel)
    priority: int = 0
    worker: str | None = None
    heartbeat: float | None = None
    cancel_requested: bool = False
    runs: int = 0  # how many times a worker started it (a SIGTERM puts it back in the queue)
    attempt: int = 0  # which queue message is the job's current one
    lost: int = 0  # how many times its worker died during it (retried once)
    background: bool = False  # started by the dashboard itself (the scoreboard): lowest priority, yields

    @property
    def active(self) -> bool:
        return self.state in ACTIVE

    @property
    def fraction(self) -> float:
        return min(self.done / self.total, 1.0) if self.total else 0.0

    def eta(self) -> float | None:
        """Seconds left at the rate so far (None until there is progress)."""
        if self.state != RUNNING or not self.started or self.done <= 0 or not self.total:
            return None
        elapsed = (self.heartbeat or time.time()) - self.started
        return max(elapsed / self.done * (self.total - self.done), 0.0)

    def summary(self) -> dict:
        eta = self.eta()
        return dict(id=self.id, analysis=self.spec.analysis, model=self.spec.model, dataset=self.spec.dataset,
                    state=self.state, progress=round(self.fraction, 3), message=self.message,
                    eta_s=None if eta is None else round(eta, 1), error=self.error,
                    requests=self.requests, from_cache=self.from_cache, worker=self.worker,
                    seconds=round((self.finished or time.time()) - (self.started or self.created), 1))

    @classmethod
    def from_records(cls, job: dict, run: dict | None, cancelled: bool, stale_s: float) -> "Job":
        spec = JobSpec.from_dict(job["spec"])
        out = cls(id=job["id"], request=job["request"], spec=spec, session=job.get("session", ""),
                  sessions=list(job.get("sessions") or [job.get("session", "")]),
                  created=job.get("created", 0.0), requests=job.get("requests", 1),
                  priority=job.get("priority", 0), cancel_requested=cancelled,
                  background=bool(job.get("background", False)))
        run = run or {}
        for name in ("state", "started", "finished", "done", "total", "message", "error", "from_cache",
                     "worker", "heartbeat", "runs", "attempt", "lost"):
            if name in run:
                setattr(out, name, run[name])
        if out.state == QUEUED and cancelled:
            out.state = CANCELLED
        elif out.state == RUNNING and out.stale(stale_s):
            if out.lost >= 1:  # what the next sweep records
                out.state, out.error = FAILED, STALE_MESSAGE.format(stale_s)
            else:
                out.state, out.message = QUEUED, RETRY_MESSAGE
        return out

    def stale(self, stale_s: float, now: float | None = None) -> bool:
        return (now or time.time()) - (self.heartbeat or self.started or 0) > stale_s


def priority_of(spec: JobSpec, session_jobs: int, background: bool = False) -> int:
    """The huey priority in the job's lane (higher runs first): each job a session already has
    queued lowers its next one (round-robin between sessions); a background job comes after all."""
    return BACKGROUND_PRIORITY if background else -10 * min(session_jobs, 9)


def sweep_lost_jobs(queue: Queue, records: Records, stale_s: float, suspects: dict, now: float | None = None) -> list[str]:
    """Recover the jobs of workers that died (called by every worker, see the module docstring).

    SUSPECTS (kept by the caller between sweeps) maps (job id, attempt) of queued jobs without a
    message to when a sweep first saw them so. Of several sweeping workers only the one that
    claims `reap:<id>:<attempt>:<heartbeat>` acts. Returns the ids of the jobs it re-queued or failed."""
    now = now or time.time()
    runs, cancels = records.all("run"), records.all("cancel")
    waiting = queue.pending_attempts()  # read after the run records: a message taken since is RUNNING by now
    acted, seen = [], set()
    for job_id, record in records.all("job").items():
        run = runs.get(job_id)
        if not isinstance(record, dict) or not isinstance(run, dict):
            continue
        try:
            job = Job.from_records(record, run, False, stale_s)
        except (KeyError, TypeError):
            continue
        state, attempt = run.get("state", QUEUED), job.attempt
        if state == RUNNING and job.stale(stale_s, now):
            pass  # its worker died during it
        elif state == QUEUED and job_id not in cancels and (job_id, attempt) not in waiting:
            seen.add((job_id, attempt))
            if now - suspects.setdefault((job_id, attempt), now) < stale_s:
                continue  # a worker may have taken the message a moment ago: look again later
            records.claim("claim", f"{job_id}:{attempt}", "sweeper")  # a worker that wakes up late must not start it
        else:
            continue
        # one sweep acts per record seen: the key holds the record's heartbeat too, so a record that a
        # silent-but-alive worker wrote back over a retry (its old attempt, a fresh heartbeat) can be
        # reaped again once that worker dies as well
        if not records.claim("reap", f"{job_id}:{attempt}:{run.get('heartbeat') or 0}", "sweeper"):
            continue  # another worker's sweep acts on it
        if state == RUNNING and job.lost >= 1:
            records.put("run", job_id, dict(run, state=FAILED, finished=now, error=STALE_MESSAGE.format(stale_s)))
        else:
            lost = job.lost + (state == RUNNING)
            records.put("run", job_id, dict(run, state=QUEUED, attempt=attempt + 1, lost=lost, done=0.0,
                                            message=RETRY_MESSAGE if state == RUNNING else REQUEUED_MESSAGE))
            queue.put(job.spec, job_id, job.priority, attempt + 1)
        acted.append(job_id)
    for key in set(suspects) - seen:
        del suspects[key]
    return acted
