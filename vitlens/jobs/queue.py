"""The queue: one small adapter over huey's storage (https://huey.readthedocs.io).

Two lanes, each a queue in one store: "interactive" (the analyses declared `lane="interactive"`)
and "heavy". Every worker takes from the interactive lane first, so one user's heavy jobs never
stand in front of a teammate's quick view. A message is JSON in huey's message layout (never a
pickle), carrying the JobSpec as JSON, the job id and the attempt. The store also holds the job
records (`vitlens.jobs.records`).

Why huey: it is small (one pure-Python package), has an embedded SQLite store *and* Redis on the
same API, priorities on both, and a key-value store for our records. RQ needs Redis (no embedded
store, so a one-machine install would need a Redis server); dramatiq needs a Redis or RabbitMQ
broker; Celery is heavy (broker + result backend + its own worker pool model) for "one job at a
time per GPU". We use huey's storage classes only and run our own worker loop (`vitlens.worker`),
so SIGTERM can put the running job back in the queue instead of losing it.

Locations: `VITLENS_QUEUE=redis://host:6379/0` (several GPU boxes take from one queue), or the
embedded SQLite file `<cache>/queue/jobs.db` (the folder private 0700), or `sqlite://PATH`.
"""
from __future__ import annotations

import json
import os
import sqlite3
import sys
import time
import uuid
from pathlib import Path

from huey.registry import Message
from huey.storage import PriorityRedisStorage, SqliteStorage

from ..declarations import LANES, get_analysis
from ..store.disk import CORRUPT
from ..store.private import cache_dir, ensure_private_dir
from ..errors import VitlensError
from ..request import JobSpec

TASK_NAME = "vitlens_job"  # the message's task name (huey's layout; kept for queues written before)
STORE_NAMES = {"heavy": "vitlens", "interactive": "vitlens-interactive"}  # the records live in "vitlens"


def lane_of(spec: JobSpec) -> str:
    """The lane the analysis declares (`register_analysis(lane=...)`)."""
    return get_analysis(spec.analysis).lane


REDIS_SCHEMES = ("redis://", "rediss://", "unix://")


def resolve_location(text: str | None, what: str = "VITLENS_QUEUE") -> str:
    """A queue location as given by a user (--queue, VITLENS_QUEUE): redis://host:port/db,
    rediss://..., unix://SOCKET (Redis), sqlite://PATH (`sqlite:///abs/jobs.db` or
    `sqlite://rel/jobs.db`), or empty for the SQLite file under the cache folder. Anything else is
    one line."""
    url = (text or "").strip()
    if url.startswith(REDIS_SCHEMES):
        return url
    if url.startswith("sqlite://") and len(url) > len("sqlite://"):
        return str(Path(url[len("sqlite://"):]).expanduser())
    if url and url != "sqlite":
        raise VitlensError(f"{what} must be redis://host:port/db, rediss://..., sqlite://PATH or empty, got {url!r}")
    return str(cache_dir() / "queue" / "jobs.db")


def queue_location() -> str:
    """Where the queue lives: $VITLENS_QUEUE or the SQLite file under the cache folder."""
    return resolve_location(os.environ.get("VITLENS_QUEUE"))


def is_redis(location: str) -> bool:
    return location.startswith(REDIS_SCHEMES)


def encode(args: list, priority: int) -> bytes:
    """A message as JSON in huey's message layout."""
    message = Message(id=uuid.uuid4().hex, name=TASK_NAME, eta=None, retries=0, retry_delay=0, priority=priority,
                      args=list(args), kwargs={}, on_complete=None, on_error=None, expires=None,
                      expires_resolved=None, timeout=None, chord_config=None, retry_backoff=None)
    return json.dumps(message._asdict()).encode()


def decode(data: bytes) -> Message:
    """A message from its JSON; ValueError for anything else (a pickle, another program's data)."""
    try:
        message = json.loads(data)
    except (TypeError, UnicodeDecodeError) as err:
        raise ValueError(f"not a vitlens message: {err}") from None
    if not isinstance(message, dict) or set(message) - set(Message._fields):
        raise ValueError("not a vitlens task message")
    return Message(**{name: message.get(name) for name in Message._fields})


def message_args(message: Message) -> tuple[str, str, int]:
    """(spec JSON, job id, attempt) of a message; messages of the first queue version had no attempt."""
    if message.name != TASK_NAME or not isinstance(message.args, list):
        raise ValueError("not a vitlens job message")
    args = list(message.args)
    if len(args) == 2:
        args.append(0)
    if len(args) != 3 or not all(isinstance(a, t) for a, t in zip(args, (str, str, int))):
        raise ValueError("not a vitlens job message")
    return args[0], args[1], args[2]


RECOVERED_KEY = "vitlens:recovered:queue"


def _move_aside(path: Path, error: Exception) -> str:
    """Move a corrupt SQLite queue (and its -wal/-shm) aside; one line in the log. Its queued jobs are
    lost (their Results, if any, are in the cache); a fresh queue starts."""
    aside = path.with_name(f"{path.name}.corrupt-{int(time.time())}")
    for suffix in ("", "-wal", "-shm"):
        if Path(f"{path}{suffix}").exists():
            os.replace(f"{path}{suffix}", f"{aside}{suffix}")
    print(f"vitlens: the queue database {path} was corrupt ({error}); moved it to {aside.name} and started a "
          "fresh queue: the jobs queued in it are lost (press Run again)", file=sys.stderr, flush=True)
    return str(aside)


def recovery_note(storage) -> str | None:
    """One line for the Jobs page when the queue was recovered from a corrupt database."""
    raw = storage.peek_data(RECOVERED_KEY)  # huey's EmptyData marker when there is none
    if not isinstance(raw, (bytes, str)) or not raw:
        return None
    try:
        note = json.loads(raw)
    except ValueError:
        return None
    if not isinstance(note, dict):
        return None
    when = time.strftime("%Y-%m-%d %H:%M", time.localtime(note.get("time", 0)))
    return (f"The queue's database was corrupt on {when} and was moved to {Path(str(note.get('moved_to'))).name}; "
            "the jobs queued in it then were lost (press Run again on their pages).")


def _ping(url: str) -> None:
    """One line when the Redis server at URL cannot be reached (instead of a worker that idles)."""
    import redis  # deferred: only a Redis queue needs the client

    try:
        redis.Redis.from_url(url, socket_connect_timeout=3, socket_timeout=3).ping()
    except (redis.exceptions.RedisError, OSError, ValueError) as err:
        reason = (str(err).splitlines() or [type(err).__name__])[0][:160]
        raise VitlensError(f"the queue at {url} cannot be reached ({reason})") from None


class Lane:
    """One lane: a priority queue of messages in the store (highest priority first)."""

    def __init__(self, name: str, storage):
        self.name, self.storage = name, storage

    def put(self, args: list, priority: int) -> None:
        self.storage.enqueue(encode(args, priority), priority)

    def take(self) -> Message | None:
        """The next message (removed from the lane), or None; ValueError for one that is not ours."""
        data = self.storage.dequeue()
        return None if data is None else decode(data)

    def pending(self) -> list[Message]:
        out = []
        for data in self.storage.enqueued_items():
            try:
                out.append(decode(data))
            except ValueError:
                continue
        return out

    def count(self) -> int:
        return self.storage.queue_size()


class Queue:
    """The lanes of one location, and the store the job records live in (`storage`)."""

    def __init__(self, location: str | None = None):
        """LOCATION: a user's form (`resolve_location`), a resolved SQLite path, or None (the
        configured queue). An unreachable Redis or an unwritable SQLite folder is one line."""
        if location is None:
            location = queue_location()
        elif "://" in location or location == "sqlite":
            location = resolve_location(location)
        self.location = location
        if is_redis(self.location):
            _ping(self.location)
        else:
            path = Path(self.location)
            try:
                ensure_private_dir(path.parent)
                if not path.exists():
                    os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))
            except OSError as err:
                raise VitlensError(f"the queue file {path} cannot be created ({err.strerror or err}); "
                                   "use a writable folder (sqlite://PATH)") from None
            if not os.access(path, os.R_OK | os.W_OK):
                raise VitlensError(f"the queue file {path} is not readable and writable")
        self.recovered: str | None = None  # where a corrupt queue database was moved, this time
        try:
            self._open_lanes()
        except sqlite3.DatabaseError as error:
            if is_redis(self.location) or not any(marker in str(error).lower() for marker in CORRUPT):
                raise VitlensError(f"the queue at {self.location} cannot be used ({error})") from None
            self.recovered = _move_aside(Path(self.location), error)
            self._open_lanes()
            self.storage.put_data(RECOVERED_KEY, json.dumps(
                {"moved_to": self.recovered, "time": time.time(), "reason": str(error)}).encode())

    def _open_lanes(self) -> None:
        self.lanes = {lane: Lane(lane, self._storage(STORE_NAMES[lane])) for lane in LANES}
        self.storage = self.lanes["heavy"].storage
        for lane in self.lanes.values():
            lane.count()  # reads the database: a corrupt file fails here, not in the first job

    def _storage(self, name: str):
        if is_redis(self.location):
            return PriorityRedisStorage(name, url=self.location)
        return SqliteStorage(name, filename=self.location, timeout=20)

    def put(self, spec: JobSpec, job_id: str, priority: int, attempt: int) -> None:
        """Queue one attempt of a job in its lane."""
        self.lanes[lane_of(spec)].put([spec.to_json(), job_id, attempt], priority)

    def pending_attempts(self) -> set[tuple[str, int]]:
        """(job id, attempt) of every message waiting in any lane."""
        out = set()
        for lane in self.lanes.values():
            for message in lane.pending():
                try:
                    _, job_id, attempt = message_args(message)
                except ValueError:
                    continue
                out.add((job_id, attempt))
        return out

    def pending_count(self) -> int:
        return sum(lane.count() for lane in self.lanes.values())
