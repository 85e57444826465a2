"""Durable background jobs: a huey queue, worker processes that own the device, JSON job records.

The dashboard only enqueues and polls; `vitlens worker` processes run the analyses
(`vitlens.worker`). A page submits a `JobSpec`; `JobManager.submit` checks the limits, joins the
queued/running job of an identical request (`engine.request_id`) or enqueues a new one; the page
polls the job's record (state, progress, time left) and may cancel it. Results land in the disk
cache as before, so a page shows them at once.

Two lanes: the interactive analyses (`CHEAP`) go in their own queue, so one user's heavy jobs
never stand in front of a teammate's quick view. Every worker takes from the interactive lane
first; the dashboard also starts `VITLENS_INTERACTIVE_WORKERS` (default 1) workers that take only
from it, so a view does not wait for a running landscape either. In a lane, each job a session
already has queued lowers its next one (round-robin between sessions).

The queue is huey's (https://huey.readthedocs.io):
  - embedded default: `SqliteHuey`, one file under the cache folder (`<cache>/queue/jobs.db`, the
    folder private 0700); the dashboard starts `VITLENS_WORKERS` worker subprocesses for it
    (`VITLENS_EMBEDDED_WORKERS=0` when workers run elsewhere, e.g. the compose `worker` service);
  - several GPU boxes: `VITLENS_QUEUE=redis://host:6379/0` -> `PriorityRedisHuey`, one queue that
    every box's `vitlens worker` takes jobs from.
Why huey: it is small (one pure-Python package), has an embedded SQLite store *and* Redis on the
same API, task priorities on both, and a key-value store for our records. RQ needs Redis (no
embedded store, so a one-machine install would need a Redis server); dramatiq needs a Redis or
RabbitMQ broker; Celery is heavy (broker + result backend + its own worker pool model) for
"one job at a time per GPU". We use huey's queue and storage, and run our own worker loop (so
SIGTERM can put the running job back in the queue instead of losing it).

Nothing user-controlled is unpickled: queue messages use `JsonMessages` (JSON, not huey's default
pickle) and carry only the JobSpec as a JSON string and the job id; job records, progress, cancel
flags and worker heartbeats are JSON bytes in huey's key-value storage (`storage.put_data` /
`peek_data`). Records: `job:<id>` (written by the submitter: spec, session, joins), `run:<id>`
(written by the worker: state, progress, heartbeat, error), `cancel:<id>`, `request:<hash>` (the
latest job of a request), `worker:<name>` (a live worker's heartbeat), `claim:<id>:<attempt>`
(which worker took a message; written once with the store's put-if-empty, so a duplicate message
never runs a job twice), `reap:<id>:<attempt>:<heartbeat>` (which sweep acted on a lost job's record).

A worker that dies never leaves a job "running" forever. Every worker sweeps the records
(`sweep_lost_jobs`, from its heartbeat thread): a running job whose heartbeat is older than
`VITLENS_JOB_STALE_S` is retried once (a new attempt in its lane; the landscape resumes its cached
grid points), and fails with "the worker stopped during the job" when it is lost a second time. A
queued job whose message is in no lane at two sweeps `VITLENS_JOB_STALE_S` apart (a worker took
it and died before marking it running) is queued again; that costs no retry.

With `VITLENS_RANKS=N` (N > 1) a worker runs the analyses that shard (hessian, landscape) as
`torchrun --nproc-per-node N -m vitlens run ...`; rank 0 fills the same cache.
"""
from __future__ import annotations

import atexit
import json
import os
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field, fields
from pathlib import Path

from huey import PriorityRedisHuey, SqliteHuey
from huey.registry import Message
from huey.serializer import Serializer

from .cache import _ensure_private_dir, cache_dir
from .analyses import get_analysis
from .engine import JobSpec, request_id
from .errors import VitlensError

QUEUED, RUNNING, DONE, FAILED, CANCELLED = "queued", "running", "done", "failed", "cancelled"
ACTIVE = (QUEUED, RUNNING)
FINAL = (DONE, FAILED, CANCELLED)
SHARDED = ("hessian", "landscape")  # analyses that split their work over torchrun ranks
CHEAP = ("evaluate", "variance", "fourier", "cka", "lesion", "noise")  # the interactive lane
LANES = ("interactive", "heavy")  # the order every worker takes them in
TASK_NAME = "vitlens_job"
PREFIX = "vitlens:"
STALE_MESSAGE = "the worker stopped during the job twice (no heartbeat for {:.0f}s); press Try again"
RETRY_MESSAGE = "the worker stopped during the job; it is retried once when a worker is free"
REQUEUED_MESSAGE = "a worker took it and stopped before starting it; back in the queue"


def lane_of(spec: JobSpec) -> str:
    return "interactive" if spec.analysis in CHEAP else "heavy"


class JobCancelled(Exception):
    """Raised inside a running job (at its next progress update) when a user cancels it."""


def env_number(name: str, default: float, cast=int):
    """An env var as a number (DEFAULT when unset or empty); a bad value is a one-line error."""
    text = os.environ.get(name, "").strip()
    if not text:
        return default
    try:
        return cast(text)
    except ValueError:
        raise VitlensError(f"{name} must be a number, got {text!r}") from None


def stale_after() -> float:
    """Seconds without a heartbeat after which a running job counts as failed."""
    return env_number("VITLENS_JOB_STALE_S", 60.0, float)


# ----------------------------------------------------------------------------- limits


@dataclass
class Limits:
    """What one request and one session may ask of a shared server (env vars, team defaults)."""

    per_session: int = 4        # VITLENS_MAX_JOBS_PER_SESSION: queued + running jobs of one session
    total: int = 50             # VITLENS_MAX_JOBS: queued + running jobs of everyone
    samples: int = 50000        # VITLENS_MAX_SAMPLES
    grid: int = 51              # VITLENS_MAX_GRID: landscape points per axis
    classes: int = 1000         # VITLENS_MAX_CLASSES: model_args num_classes
    minibatches: int = 1000     # VITLENS_MAX_MINIBATCHES: Hessian spectrum minibatches

    ENV = dict(per_session="VITLENS_MAX_JOBS_PER_SESSION", total="VITLENS_MAX_JOBS",
               samples="VITLENS_MAX_SAMPLES", grid="VITLENS_MAX_GRID", classes="VITLENS_MAX_CLASSES",
               minibatches="VITLENS_MAX_MINIBATCHES")

    @classmethod
    def from_env(cls) -> "Limits":
        return cls(**{f.name: env_number(cls.ENV[f.name], f.default) for f in fields(cls)})

    def check(self, spec: JobSpec) -> None:
        """Raise a one-line VitlensError when SPEC asks for more than a shared server allows."""
        def refuse(what: str, value, limit: int, var: str):
            raise VitlensError(f"{what} {value} is over this server's limit of {limit} ({var}); ask for less")
        if spec.samples is not None and spec.samples > self.samples:
            refuse("samples", spec.samples, self.samples, self.ENV["samples"])
        classes = (spec.model_args or {}).get("num_classes")
        if isinstance(classes, (int, float)) and classes > self.classes:
            refuse("num_classes", classes, self.classes, self.ENV["classes"])
        params = get_analysis(spec.analysis).parse(spec.params or {})  # typed by the declaration
        for name, limit in (("grid", self.grid), ("minibatches", self.minibatches)):
            value = params.get(name)
            if value is not None and value > limit:
                refuse(name, value, limit, self.ENV[name])


# ----------------------------------------------------------------------------- the queue


class JsonMessages(Serializer):
    """huey messages as JSON instead of pickle: a message holds only strings, numbers and lists."""

    def _serialize(self, data) -> bytes:
        if not isinstance(data, Message):
            raise TypeError(f"vitlens queues task messages only, not {type(data).__name__}")
        message = data._asdict()
        for name in ("eta", "on_complete", "on_error", "expires", "expires_resolved", "chord_config"):
            if message[name] is not None:
                raise TypeError(f"vitlens task messages carry no {name}")
        message["args"] = list(message["args"])
        return json.dumps(message).encode()

    def _deserialize(self, data: bytes) -> Message:
        message = json.loads(data)
        if not isinstance(message, dict) or set(message) - set(Message._fields):
            raise ValueError("not a vitlens task message")
        return Message(**message)


def _job_task(spec_json: str, job_id: str) -> None:  # pragma: no cover - never called here
    """The queued task; `vitlens.worker` runs it (it reads the message's arguments itself)."""
    raise RuntimeError("vitlens jobs run in `vitlens worker`")


def queue_location() -> str:
    """Where the queue lives: $VITLENS_QUEUE (redis://...) or the SQLite file under the cache folder."""
    url = os.environ.get("VITLENS_QUEUE", "").strip()
    if url.startswith(("redis://", "rediss://", "unix://")):
        return url
    if url.startswith("sqlite://"):
        return str(Path(url[len("sqlite://"):]).expanduser())
    if url and url != "sqlite":
        raise VitlensError(f"VITLENS_QUEUE must be redis://host:port/db or sqlite://PATH, got {url!r}")
    return str(cache_dir() / "queue" / "jobs.db")


def is_redis(location: str) -> bool:
    return location.startswith(("redis://", "rediss://", "unix://"))


def _open_huey(location: str, name: str):
    if is_redis(location):
        huey = PriorityRedisHuey(name, url=location, results=False, serializer=JsonMessages())
    else:
        huey = SqliteHuey(name, filename=location, results=False, serializer=JsonMessages(), timeout=20)
    huey.vitlens_task = huey.task(name=TASK_NAME)(_job_task)
    return huey


def open_queue(location: str | None = None):
    """The huey instance for LOCATION (default `queue_location()`): the heavy lane and the records'
    storage; `huey.vitlens_lanes` maps each lane to its huey queue (one store, two queue names)."""
    location = location or queue_location()
    if not is_redis(location):
        path = Path(location)
        _ensure_private_dir(path.parent)
        if not path.exists():
            os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))
    huey = _open_huey(location, "vitlens")
    huey.vitlens_lanes = {"interactive": _open_huey(location, "vitlens-interactive"), "heavy": huey}
    huey.vitlens_location = location
    return huey


def put_message(huey, spec: JobSpec, job_id: str, priority: int, attempt: int) -> None:
    """Queue one attempt of a job in its lane (a message carries the spec as JSON, the id and the attempt)."""
    queue = huey.vitlens_lanes[lane_of(spec)]
    queue.enqueue(queue.vitlens_task.s(json.dumps(spec.to_dict(), sort_keys=True), job_id, attempt, priority=priority))


def message_args(task) -> tuple[str, str, int]:
    """(spec JSON, job id, attempt) of a message; messages of the first queue version had no attempt."""
    args = list(task.args)
    if len(args) == 2:
        args.append(0)
    if len(args) != 3 or not all(isinstance(a, t) for a, t in zip(args, (str, str, int))):
        raise ValueError("not a vitlens job message")
    return args[0], args[1], args[2]


def pending_attempts(huey) -> set[tuple[str, int]]:
    """(job id, attempt) of every message waiting in any lane."""
    out = set()
    for queue in huey.vitlens_lanes.values():
        for task in queue.pending():
            try:
                _, job_id, attempt = message_args(task)
            except ValueError:
                continue
            out.add((job_id, attempt))
    return out


class Records:
    """JSON records in huey's key-value storage (never pickles)."""

    def __init__(self, huey):
        self.storage = huey.storage

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


# ----------------------------------------------------------------------------- jobs


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
    priority: int = 0
    worker: str | None = None
    heartbeat: float | None = None
    cancel_requested: bool = False
    runs: int = 0  # how many times a worker started it (a SIGTERM puts it back in the queue)
    attempt: int = 0  # which queue message is the job's current one
    lost: int = 0  # how many times its worker died during it (retried once)

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
        spec = JobSpec(**job["spec"])
        out = cls(id=job["id"], request=job["request"], spec=spec, session=job.get("session", ""),
                  created=job.get("created", 0.0), requests=job.get("requests", 1),
                  priority=job.get("priority", 0), cancel_requested=cancelled)
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


def job_spec_from_json(text: str) -> JobSpec:
    """The JobSpec of a queue message (JSON of `JobSpec.to_dict`, nothing else)."""
    data = json.loads(text)
    names = {f.name for f in fields(JobSpec)}
    if not isinstance(data, dict) or set(data) - names:
        raise VitlensError("a queued job is not a JobSpec")
    return JobSpec(**data)


def priority_of(spec: JobSpec, session_jobs: int) -> int:
    """The huey priority in the job's lane (higher runs first): each job a session already has
    queued lowers its next one (round-robin between sessions)."""
    return -10 * min(session_jobs, 9)


def sweep_lost_jobs(huey, records: Records, stale_s: float, suspects: dict, now: float | None = None) -> list[str]:
    """Recover the jobs of workers that died (called by every worker, see the module docstring).

    SUSPECTS (kept by the caller between sweeps) maps (job id, attempt) of queued jobs without a
    message to when a sweep first saw them so. Of several sweeping workers only the one that
    claims `reap:<id>:<attempt>:<heartbeat>` acts. Returns the ids of the jobs it re-queued or failed."""
    now = now or time.time()
    runs, cancels = records.all("run"), records.all("cancel")
    waiting = pending_attempts(huey)  # read after the run records: a message taken since is RUNNING by now
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
            put_message(huey, job.spec, job_id, job.priority, attempt + 1)
        acted.append(job_id)
    for key in set(suspects) - seen:
        del suspects[key]
    return acted


class JobManager:
    """Submit, join, poll and cancel jobs of one queue; optionally runs embedded worker processes."""

    def __init__(self, location: str | None = None, embedded_workers: int | None = None, keep: int = 200):
        self.huey = open_queue(location)
        self.location = self.huey.vitlens_location
        self.records = Records(self.huey)
        self.limits = Limits.from_env()
        self._lock = threading.Lock()
        self._keep = keep
        self._workers: list[subprocess.Popen] = []
        if embedded_workers is None:
            default = 0 if is_redis(self.location) else env_number("VITLENS_WORKERS", 1)
            embedded_workers = env_number("VITLENS_EMBEDDED_WORKERS", default)
        if embedded_workers > 0:
            interactive = env_number("VITLENS_INTERACTIVE_WORKERS", 1)  # a bad value: no process started yet
            self.start_workers(embedded_workers)
            self.start_workers(interactive, lanes="interactive")

    # ---- submit / join

    def submit(self, spec: JobSpec, session: str = "") -> Job:
        """Queue SPEC, or join the queued/running job that computes the same request.

        Raises VitlensError (one line) when SPEC or the queue is over a limit."""
        self.limits.check(spec)
        request = request_id(spec)
        with self._lock:
            current = self._latest(request)
            if current is not None and current.active:
                job = self.records.get("job", current.id)
                job["requests"] = job.get("requests", 1) + 1
                self.records.put("job", current.id, job)
                current.requests = job["requests"]
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
            priority = priority_of(spec, len(mine))
            record = dict(id=job_id, request=request, spec=spec.to_dict(), session=session, created=time.time(),
                          requests=1, priority=priority)
            self.records.put("job", job_id, record)
            self.records.put("run", job_id, dict(state=QUEUED, message="waiting for a worker"))
            self.records.put("request", request, job_id)
            self.enqueue(job_id, spec, priority)
            self._trim()
        return self.get(job_id)

    def enqueue(self, job_id: str, spec: JobSpec, priority: int) -> None:
        put_message(self.huey, spec, job_id, priority, 0)

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

    def find(self, spec: JobSpec) -> Job | None:
        """The most recent job for the same request as SPEC."""
        return self._latest(request_id(spec))

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
        return sum(queue.pending_count() for queue in self.huey.vitlens_lanes.values())

    def wait(self, job: Job, timeout: float = 600.0, poll: float = 0.1) -> Job:
        """Block until JOB finishes (tests and scripts; pages poll instead). Returns its last snapshot."""
        end = time.time() + timeout
        while True:
            job = self.get(job.id) or job
            if not job.active or time.time() > end:
                return job
            time.sleep(poll)

    # ---- cancel

    def cancel(self, job_id: str) -> bool:
        """Ask a job to stop; a queued job never starts, a running one stops at its next update."""
        job = self.get(job_id)
        if job is None or not job.active:
            return False
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

    # ---- embedded workers

    def start_workers(self, count: int, lanes: str = "all") -> None:
        """Start COUNT `vitlens worker` subprocesses on this queue, taking from LANES ("all" or
        "interactive"); they exit when this process does."""
        log_dir = Path(self.location).parent if not is_redis(self.location) else cache_dir()
        env = dict(os.environ, VITLENS_QUEUE=self.location if is_redis(self.location) else f"sqlite://{self.location}")
        for n in range(count):
            name = f"embedded-{os.getpid()}-{lanes}-{n}"
            log = open(log_dir / f"worker-{name}.log", "ab")
            cmd = [sys.executable, "-m", "vitlens", "worker", "--parent-pid", str(os.getpid()),
                   "--name", name, "--lanes", lanes]
            self._workers.append(subprocess.Popen(cmd, env=env, stdin=subprocess.DEVNULL, stdout=log,
                                                  stderr=subprocess.STDOUT))
            log.close()

    def stop_workers(self, timeout: float = 3.0) -> None:
        """SIGTERM the embedded workers (their running job goes back to the queue); wait up to TIMEOUT."""
        for proc in self._workers:
            if proc.poll() is None:
                proc.terminate()
        end = time.time() + timeout
        for proc in self._workers:
            try:
                proc.wait(max(0.0, end - time.time()))
            except subprocess.TimeoutExpired:
                pass  # it notices our exit on its own and stops within its grace period
        self._workers = [p for p in self._workers if p.poll() is None]

    def close(self, timeout: float = 3.0) -> None:
        self.stop_workers(timeout)


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
        return _MANAGER


def _in_streamlit_server() -> bool:
    """True in a `streamlit run` server process (not under AppTest or in a script)."""
    command = getattr(sys, "orig_argv", [])[:4]  # Streamlit rewrites sys.argv to the page script
    return "streamlit" in sys.modules and any(Path(arg).name in ("streamlit", "streamlit.exe") for arg in command)


@atexit.register
def _stop_embedded_workers() -> None:
    """At exit: SIGTERM the embedded workers without waiting (each re-queues its job and exits in
    well under a second; one that misses the signal notices its parent is gone).

    In the dashboard server (after Streamlit's own clean shutdown on SIGTERM) the process then ends
    at once: the interpreter's teardown of torch and Streamlit took over 5 s on a busy machine, and
    every job record and cache entry is committed already. VITLENS_FAST_EXIT=0 keeps the teardown."""
    if _MANAGER is None:
        return
    _MANAGER.close(timeout=0.0)
    if os.environ.get("VITLENS_FAST_EXIT", "1") != "0" and _in_streamlit_server():
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)


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
