"""Disk cache of analysis Results, keyed by what produced them.

What is cached: one `Result` per (model weights, data spec, analysis, params, vitlens version),
plus a small JSON index record per Result (for `vitlens cache ls`).

The key: `cache_key(model_fingerprint(model), data_spec, analysis, params)` is the sha256 of a
canonical JSON of those four and the vitlens version, so new weights, another data set, another
parameter or a new release never serve a stale Result.

Why data, not pickles: diskcache pickles values by default, and unpickling runs code, so anyone
who can write the cache folder could run code in the dashboard (CVE-2025-69872). Here the folder is
private (0700), values are stored as bytes/JSON text only, and the `Disk` below refuses to pickle
on store and to unpickle on fetch: an entry planted in pickle mode is treated as corrupt and
deleted, never loaded. Each Result carries a sha256 checksum that is checked on every read; a bad
entry is dropped (with a warning) and the caller recomputes.
"""
from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import re
import secrets
import shutil
import sqlite3
import stat
import threading
import time
from importlib import metadata
from pathlib import Path
from typing import Any, Callable

import diskcache
import torch

from .errors import VitlensError
from .result import Result, _json_safe

try:
    VERSION = metadata.version("vitlens")
except metadata.PackageNotFoundError:  # running from a source checkout
    VERSION = "0.1.0"

logger = logging.getLogger(__name__)

DEFAULT_SIZE_LIMIT = 2 * 1024**3  # 2 GiB
_DEFAULT_DIR = "~/.cache/vitlens/results"

# Storage keys are namespaced so results, index records and aliases never collide.
_RESULT_PREFIX = "result:"
_INDEX_PREFIX = "index:"
_ALIAS_PREFIX = "alias:"

# Stored result = magic + sha256(payload) + payload; the checksum catches bit rot and truncation.
_ENVELOPE_MAGIC = b"VLC2"  # VLC2: the checksum is an HMAC keyed with the folder's secret
SECRET_FILE = "secret.key"
_DIGEST_SIZE = hashlib.sha256().digest_size


class UnsafeEntry(Exception):
    """A stored entry that would need unpickling (or pickling) to use; never loaded."""


# --------------------------------------------------------------------------- folder


def _ensure_private_dir(path: Path) -> Path:
    """Create `path` (and missing parents) as 0700, or tighten an existing folder we own."""
    path = path.expanduser()
    if path.exists():
        if not path.is_dir():
            raise VitlensError(f"cache folder '{path}' exists and is not a folder")
    else:
        # Path.mkdir(parents=True) gives parents the default mode; create each one privately.
        missing = []
        for p in [path, *path.parents]:
            if p.exists():
                break
            missing.append(p)
        for p in reversed(missing):
            try:
                os.mkdir(p, 0o700)
            except FileExistsError:  # another process made it first
                pass
            except OSError as error:
                raise VitlensError(f"cannot create cache folder '{p}': {error.strerror}") from None
            os.chmod(p, 0o700)  # mkdir's mode is filtered by the umask
    info = path.stat()
    if hasattr(os, "geteuid") and info.st_uid != os.geteuid():
        # Its owner could plant entries, whatever the mode says (root is no exception).
        raise VitlensError(f"cache folder '{path}' belongs to another user (uid {info.st_uid}); "
                           "set VITLENS_CACHE_DIR to a folder of your own")
    mode = info.st_mode
    if mode & 0o077:
        # Anyone who can write here could plant entries; only the owner may tighten it.
        try:
            os.chmod(path, stat.S_IMODE(mode) & 0o700)
        except PermissionError:
            raise VitlensError(
                f"cache folder '{path}' is readable by others and not yours to fix; "
                "set VITLENS_CACHE_DIR to a private folder") from None
    return path


def cache_dir() -> Path:
    """The cache folder: $VITLENS_CACHE_DIR or ~/.cache/vitlens/results, private (0700)."""
    return _ensure_private_dir(Path(os.environ.get("VITLENS_CACHE_DIR") or _DEFAULT_DIR))


# --------------------------------------------------------------------------- keys


def model_fingerprint(model: torch.nn.Module) -> str:
    """sha256 of the model's class, module structure and every state_dict entry's bytes."""
    h = hashlib.sha256()
    cls = type(model)
    h.update(f"{cls.__module__}.{cls.__qualname__}\n".encode())
    # repr lists submodules and their settings (activation, dropout p, ...) that weights miss.
    h.update(repr(model).encode())
    for name, value in model.state_dict().items():
        if not isinstance(value, torch.Tensor):  # e.g. _extra_state objects
            h.update(json.dumps([name, repr(value)]).encode() + b"\0")
            continue
        t = value.detach().to("cpu").contiguous()
        h.update(json.dumps([name, str(t.dtype), list(t.shape)]).encode() + b"\0")
        if t.numel():
            # Raw bytes via a uint8 view: no copy, and works for dtypes numpy lacks (bfloat16).
            h.update(t.reshape(-1).view(torch.uint8).numpy())
    return h.hexdigest()


def _json_default(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "item") and callable(value.item) and getattr(value, "ndim", 1) == 0:
        return value.item()  # numpy / torch scalars
    if isinstance(value, (set, frozenset)):
        return sorted(value)
    raise VitlensError(f"cache key parts must be JSON data, got {type(value).__name__}")


def cache_key(fingerprint: str, data_spec: dict | str, analysis: str, params: dict) -> str:
    """sha256 of a canonical JSON of everything that decides a Result, vitlens version included."""
    if not isinstance(params, dict):
        raise VitlensError(f"analysis params must be a dict, got {type(params).__name__}")
    if not isinstance(data_spec, (dict, str)):
        raise VitlensError(f"data spec must be a dict or a string, got {type(data_spec).__name__}")
    parts = {"fingerprint": fingerprint, "data": data_spec, "analysis": analysis,
             "params": params, "vitlens": VERSION}
    try:
        text = json.dumps(parts, sort_keys=True, separators=(",", ":"), default=_json_default)
    except TypeError as error:  # e.g. dict keys of mixed types cannot be sorted
        raise VitlensError(f"cache key parts must be JSON data: {error}") from None
    return hashlib.sha256(text.encode()).hexdigest()


# --------------------------------------------------------------------------- size


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


# --------------------------------------------------------------------------- storage


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


def _seal(payload: bytes, secret: bytes) -> bytes:
    return _ENVELOPE_MAGIC + hmac.new(secret, payload, hashlib.sha256).digest() + payload


def _unseal(blob: Any, secret: bytes) -> bytes:
    """The payload of a sealed entry. The seal is an HMAC with the cache's own secret (a 0600 file
    in the folder): an entry written by anyone without that secret is refused, not loaded."""
    if not isinstance(blob, bytes) or not blob.startswith(_ENVELOPE_MAGIC):
        raise UnsafeEntry("not a vitlens cache entry")
    start = len(_ENVELOPE_MAGIC)
    digest, payload = blob[start:start + _DIGEST_SIZE], blob[start + _DIGEST_SIZE:]
    if not hmac.compare_digest(hmac.new(secret, payload, hashlib.sha256).digest(), digest):
        raise UnsafeEntry("checksum mismatch")
    return payload


def _secret(directory: Path) -> bytes:
    """The cache folder's HMAC key, created once (0600)."""
    path = directory / SECRET_FILE
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path.read_bytes()
    with os.fdopen(fd, "wb") as out:
        out.write(secrets.token_bytes(32))
    return path.read_bytes()


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


def _open_diskcache(directory: Path, size_limit: int) -> diskcache.Cache:
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


def _check_key(key: Any) -> str:
    if not isinstance(key, str) or not key:
        raise VitlensError(f"cache key must be a non-empty string, got {key!r}")
    return key


class ResultCache:
    """Results on disk, least-recently-used eviction, data only (no pickles)."""

    def __init__(self, directory: str | Path | None = None, size_limit: int | str | None = None,
                 read_only: bool = False):
        """READ_ONLY: open an existing folder without writing anything to it (the Results shipped
        inside the package, `vitlens.shipped`); new Results are refused with one line."""
        if size_limit is None:
            size_limit = os.environ.get("VITLENS_CACHE_SIZE") or DEFAULT_SIZE_LIMIT
        self.size_limit = parse_size(size_limit)
        if read_only:
            self.directory = Path(directory)
            self._secret = (self.directory / SECRET_FILE).read_bytes()
            self._cache = ReadOnlyStore(self.directory, "opened read-only")
            self.read_only = True
            return
        if directory is None:
            self.directory = cache_dir()
        else:
            self.directory = _ensure_private_dir(Path(directory))
        self._secret = _secret(self.directory)
        self.read_only = False
        try:
            self._cache = _open_diskcache(self.directory, self.size_limit)
        except VitlensError as error:  # a read-only folder: serve what is there, refuse new Results
            if not any(m in str(error).lower() for m in READ_ONLY_MARKERS) or not (self.directory / "cache.db").is_file():
                raise
            self._cache = ReadOnlyStore(self.directory, str(error).split("(", 1)[-1].split(";")[0])
            self.read_only = True

    # ---- results

    def get(self, key: str) -> Result | None:
        """The cached Result, or None when absent or unreadable (a bad entry is deleted)."""
        key = _check_key(key)
        try:
            blob = self._cache.get(_RESULT_PREFIX + key)
            if blob is None:
                return None
            result = Result.from_bytes(_unseal(blob, self._secret))
        except (UnsafeEntry, ValueError, OSError) as error:
            # Includes Parquet/JSON decode errors (ArrowInvalid and JSONDecodeError are
            # ValueErrors); recomputing is always safe, loading a bad entry is not.
            logger.warning("dropping unreadable cache entry %s: %s", key[:16], error)
            self.delete(key)
            return None
        # Reading the index record refreshes its LRU time, so it is evicted with its Result.
        self._read_json(_INDEX_PREFIX + key)
        return result

    def put(self, key: str, result: Result, info: dict | None = None) -> None:
        """Store `result` under `key` plus a JSON index record (analysis, model, data, ...)."""
        key = _check_key(key)
        if not isinstance(result, Result):
            raise TypeError(f"only Results are cached, got {type(result).__name__}")
        if info is not None and not isinstance(info, dict):
            raise VitlensError(f"cache info must be a dict, got {type(info).__name__}")
        blob = _seal(result.to_bytes(), self._secret)
        if len(blob) > self.size_limit // 2:
            # It would be evicted at once (or push out everything else), and a page would ask for it
            # again and again.
            raise VitlensError(f"the result ({len(blob) / 2**20:.1f} MiB) does not fit the cache "
                               f"({self.size_limit / 2**20:.1f} MiB); raise VITLENS_CACHE_SIZE")
        # One set per entry: diskcache writes the value file before the row, so readers never see
        # half a Result. The index is written second; ls() tolerates a missing one.
        record = {**_json_safe(info or {}), "key": key, "size": len(blob), "created": time.time()}
        try:
            self._cache.set(_RESULT_PREFIX + key, blob)
            self._cache.set(_INDEX_PREFIX + key, json.dumps(record, sort_keys=True))
        except (sqlite3.DatabaseError, OSError) as error:  # a full disk, a read-only folder: one line
            raise storage_error(self.directory, error) from None

    def get_or_compute(self, key: str, compute: Callable[[], Result],
                       info: dict | None = None) -> tuple[Result, bool]:
        """(Result, served_from_cache). Nothing is stored if `compute` raises or is interrupted."""
        cached = self.get(key)
        if cached is not None:
            return cached, True
        if self.read_only:  # nothing new can be stored: refuse before computing
            self._cache.refuse()
        result = compute()
        try:
            self.put(key, result, info)  # only reached when compute returned normally
        except VitlensError as error:  # the Result is not lost because the disk is full: say so, return it
            logger.warning("not cached: %s", error)
        return result, False

    def delete(self, key: str) -> bool:
        """Remove a Result and its index record; True if a Result was there."""
        key = _check_key(key)
        self._cache.delete(_INDEX_PREFIX + key)
        return self._cache.delete(_RESULT_PREFIX + key)

    def __contains__(self, key: str) -> bool:
        return (_RESULT_PREFIX + _check_key(key)) in self._cache

    # ---- aliases: a request (what the user asked for) -> the key of its Result

    def set_alias(self, alias: str, key: str) -> None:
        """Remember that request ALIAS produced the Result under KEY, so a page can show a
        computed Result at once without rebuilding the model to fingerprint its weights."""
        if self.read_only:
            return  # served from a read-only folder: nothing to remember
        self._cache.set(_ALIAS_PREFIX + _check_key(alias), json.dumps({"key": _check_key(key)}))

    def get_by_alias(self, alias: str) -> Result | None:
        record = self._read_json(_ALIAS_PREFIX + _check_key(alias))
        if not record or not isinstance(record.get("key"), str):
            return None
        return self.get(record["key"])

    # ---- listing

    def ls(self) -> list[dict]:
        """One dict per cached Result (key, analysis, model, data, size, created), newest first."""
        stored_keys = [k for k in self._cache.iterkeys() if isinstance(k, str)]
        results = {k[len(_RESULT_PREFIX):] for k in stored_keys if k.startswith(_RESULT_PREFIX)}
        for stored in stored_keys:
            # Eviction may take a Result and leave its index record; drop such orphans.
            if stored.startswith(_INDEX_PREFIX) and stored[len(_INDEX_PREFIX):] not in results:
                self._cache.delete(stored)
        rows = []
        for key in results:
            record = self._read_json(_INDEX_PREFIX + key) or {}
            rows.append({"key": key, "analysis": record.get("analysis"),
                         "model": record.get("model"), "data": record.get("data"),
                         "size": record.get("size"), "created": record.get("created")})
        return sorted(rows, key=lambda r: r["created"] or 0.0, reverse=True)

    def clear(self) -> int:
        """Remove everything in the cache folder; returns how many Results were removed."""
        count = len(self.ls())
        self._cache.clear()
        return count

    def cull(self) -> int:
        """Evict least-recently-used entries until the cache fits its size limit."""
        return self._cache.cull()

    def volume(self) -> int:
        """Estimated bytes on disk."""
        return self._cache.volume()

    # ---- helpers and lifetime

    def _read_json(self, stored_key: str) -> dict | None:
        """A JSON record, or None (and deleted) when absent or not ours."""
        try:
            text = self._cache.get(stored_key)
            if text is None:
                return None
            record = json.loads(text) if isinstance(text, str) else None
        except (UnsafeEntry, ValueError, OSError) as error:
            logger.warning("dropping unreadable cache record %s: %s", stored_key[:24], error)
            record = None
        if not isinstance(record, dict):
            self._cache.delete(stored_key)
            return None
        return record

    def close(self) -> None:
        self._cache.close()

    def __enter__(self) -> "ResultCache":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()
