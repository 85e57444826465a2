"""The disk underneath the result cache: diskcache with a serialiser that never pickles, a read-only
view of the same database (a read-only folder or the shipped Results), and one-line storage faults.
"""
from __future__ import annotations

import logging
import os
import re
import shutil
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

import diskcache

from ..errors import VitlensError
from .private import UnsafeEntry

logger = logging.getLogger("vitlens.cache")

_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(?:i?b)?\s*$", re.IGNORECASE)


def parse_size(text: str | int) -> int:
    """'2G', '500M', '64k', '1.5GiB' or plain bytes -> bytes (binary multiples)."""
    if isinstance(text, int) and not isinstance(text, bool):
        size = text
    else:
        match = _SIZE_RE.match(str(text))
        if not match:
            raise VitlensError(f"cache size must be bytes or a size like 500M or 2G, got '{text}'")
        number, unit = match.groups()
        size = int(float(number) * 1024 ** " kmgt".index(unit.lower() or " "))
    if size <= 0:
        raise VitlensError(f"cache size must be positive, got '{text}'")
    return size


class DataOnlyDisk(diskcache.Disk):
    """diskcache serialiser that stores bytes/str/int/float natively and never pickles."""

    def put(self, key):
        if not _is_native(key):
            raise TypeError(f"cache keys must be str/bytes/int/float, got {type(key).__name__}")
        return super().put(key)

    def get(self, key, raw):
        if raw:
            return super().get(key, raw)
        # A pickled key can only have been planted by someone else: hand back the opaque blob
        # (which our code skips) rather than unpickle it.
        return bytes(key)

    def store(self, value, read, key=diskcache.core.UNKNOWN):
        if not (read or _is_native(value)):
            raise TypeError(f"refusing to pickle a {type(value).__name__} into the cache")
        return super().store(value, read, key=key)

    def fetch(self, mode, filename, value, read):
        if mode == diskcache.core.MODE_PICKLE:
            raise UnsafeEntry("entry is a pickle")
        return super().fetch(mode, filename, value, read)


def _is_native(value: Any) -> bool:
    """Types diskcache stores as they are; anything else (subclasses included) it would pickle."""
    if type(value) is int:
        return -2**63 <= value < 2**63  # SQLite integers; bigger ones get pickled
    return type(value) in (bytes, str, float)


# Only these mean the database file itself is damaged; a full disk, a read-only folder or an I/O
# error leave it as it is (moving it aside would lose every cached Result for a passing fault).
CORRUPT = ("file is not a database", "database disk image is malformed")


def storage_error(directory: Path, error: BaseException) -> VitlensError:
    """One line for a cache folder that cannot be read or written: the folder, the reason, the free space."""
    try:
        free = f"{shutil.disk_usage(directory).free / 2**20:,.0f} MiB free"
    except OSError:
        free = "free space unknown"
    reason = (str(error).strip().splitlines() or [type(error).__name__])[0][:160]
    return VitlensError(f"the cache folder {directory} cannot be used ({reason}; {free}); nothing in it was "
                        "moved or deleted")


def open_diskcache(directory: Path, size_limit: int) -> diskcache.Cache:
    """The diskcache, or a fresh one when its database is corrupt (the bad file is moved aside
    with one warning: a corrupt cache must not take the dashboard and the CLI down). Any other
    storage fault (a full disk, a read-only folder) is one line and moves nothing."""
    def open_it():
        # Settings are passed explicitly: those stored in the folder's database would win otherwise.
        cache = diskcache.Cache(str(directory), disk=DataOnlyDisk, size_limit=size_limit,
                                eviction_policy="least-recently-used")
        cache.get("probe:")  # reads the database: a corrupt file fails here
        return cache
    try:
        return open_it()
    except sqlite3.DatabaseError as error:
        if not any(marker in str(error).lower() for marker in CORRUPT):
            raise storage_error(directory, error) from None
        database = directory / "cache.db"
        aside = directory / f"cache.db.corrupt-{int(time.time())}"
        for suffix in ("", "-wal", "-shm"):
            if Path(f"{database}{suffix}").exists():
                os.replace(f"{database}{suffix}", f"{aside}{suffix}")
        logger.warning("cache database %s is corrupt (%s); moved it to %s and started a fresh cache",
                       database, error, aside.name)
        return open_it()
    except OSError as error:  # the folder cannot be written (read-only mount, permissions)
        raise storage_error(directory, error) from None


READ_ONLY_MARKERS = ("readonly", "read-only", "read only")


class ReadOnlyStore:
    """The cache's database read without writing anything (a read-only folder or mount): the
    dashboard keeps serving what is cached while new Results are refused with one line. Reads go
    through SQLite's read-only, immutable mode; values as diskcache stores them (inline, or in a file
    under the folder); a pickled value is refused as always."""

    def __init__(self, directory: Path, reason: str):
        self.directory, self.reason = directory, reason
        uri = f"file:{directory / 'cache.db'}?mode=ro&immutable=1"
        self._db = sqlite3.connect(uri, uri=True, check_same_thread=False)
        self._db.execute("SELECT 1 FROM Cache LIMIT 1")  # a folder without a cache database fails here
        self._lock = threading.Lock()  # one connection, shared by the dashboard's session threads

    def get(self, key: str, default=None):
        with self._lock:
            row = self._db.execute("SELECT mode, filename, value FROM Cache WHERE key = ? AND raw = 1",
                                   (key,)).fetchone()
        if row is None:
            return default
        mode, filename, value = row
        if mode == diskcache.core.MODE_PICKLE:
            raise UnsafeEntry("entry is a pickle")
        if filename:  # a large value lives in its own file
            data = (self.directory / filename).read_bytes()
            return data.decode() if mode == diskcache.core.MODE_TEXT else data
        return bytes(value) if isinstance(value, memoryview) else value

    def iterkeys(self):
        with self._lock:
            return iter([k for (k,) in self._db.execute("SELECT key FROM Cache WHERE raw = 1 ORDER BY rowid")])

    def __contains__(self, key) -> bool:
        return self.get(key) is not None

    def refuse(self, *args, **kwargs):
        raise VitlensError(f"the cache folder {self.directory} is read-only ({self.reason}): cached Results are "
                           "served, new ones cannot be stored")

    set = clear = cull = refuse

    def delete(self, key) -> bool:
        return False  # a bad entry stays where it is (it is skipped when read, as always)

    def volume(self) -> int:
        return sum(p.stat().st_size for p in self.directory.rglob("*") if p.is_file())

    def close(self) -> None:
        self._db.close()
