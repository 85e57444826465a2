"""Disk cache of analysis Results, keyed by what produced them (`vitlens.store.keys`).

What is cached: one `Result` per key, plus a small JSON index record per Result (for `vitlens cache
ls`) and aliases (a request id -> the key of its Result).

Why data, not pickles: diskcache pickles values by default, and unpickling runs code, so anyone
who can write the cache folder could run code in the dashboard (CVE-2025-69872). Here the folder is
private (0700), values are stored as bytes/JSON text only, and the disk (`store.disk.DataOnlyDisk`)
refuses to pickle on store and to unpickle on fetch: an entry planted in pickle mode is treated as
corrupt and deleted, never loaded. Each Result is sealed with an HMAC keyed by the folder's secret
(`store.private`) and checked on every read; a bad entry is dropped (with a warning) and the caller
recomputes.
"""
from __future__ import annotations

import json
import logging
import os
import sqlite3
import time
from pathlib import Path
from typing import Any, Callable

from ..errors import VitlensError
from ..result import Result, json_safe
from .disk import READ_ONLY_MARKERS, ReadOnlyStore, open_diskcache, parse_size, storage_error
from .private import SECRET_FILE, UnsafeEntry, cache_dir, ensure_private_dir, read_secret, seal, unseal

logger = logging.getLogger("vitlens.cache")

DEFAULT_SIZE_LIMIT = 2 * 1024**3  # 2 GiB

# Storage keys are namespaced so results, index records and aliases never collide.
RESULT_PREFIX = "result:"
INDEX_PREFIX = "index:"
ALIAS_PREFIX = "alias:"


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
            self.directory = ensure_private_dir(Path(directory))
        self._secret = read_secret(self.directory)
        self.read_only = False
        try:
            self._cache = open_diskcache(self.directory, self.size_limit)
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
            blob = self._cache.get(RESULT_PREFIX + key)
            if blob is None:
                return None
            result = Result.from_bytes(unseal(blob, self._secret))
        except (UnsafeEntry, ValueError, OSError) as error:
            # Includes Parquet/JSON decode errors (ArrowInvalid and JSONDecodeError are
            # ValueErrors); recomputing is always safe, loading a bad entry is not.
            logger.warning("dropping unreadable cache entry %s: %s", key[:16], error)
            self.delete(key)
            return None
        # Reading the index record refreshes its LRU time, so it is evicted with its Result.
        self._read_json(INDEX_PREFIX + key)
        return result

    def put(self, key: str, result: Result, info: dict | None = None) -> None:
        """Store `result` under `key` plus a JSON index record (analysis, model, data, ...)."""
        key = _check_key(key)
        if not isinstance(result, Result):
            raise TypeError(f"only Results are cached, got {type(result).__name__}")
        if info is not None and not isinstance(info, dict):
            raise VitlensError(f"cache info must be a dict, got {type(info).__name__}")
        blob = seal(result.to_bytes(), self._secret)
        if len(blob) > self.size_limit // 2:
            # It would be evicted at once (or push out everything else), and a page would ask for it
            # again and again.
            raise VitlensError(f"the result ({len(blob) / 2**20:.1f} MiB) does not fit the cache "
                               f"({self.size_limit / 2**20:.1f} MiB); raise VITLENS_CACHE_SIZE")
        # One set per entry: diskcache writes the value file before the row, so readers never see
        # half a Result. The index is written second; ls() tolerates a missing one.
        record = {**json_safe(info or {}), "key": key, "size": len(blob), "created": time.time()}
        try:
            self._cache.set(RESULT_PREFIX + key, blob)
            self._cache.set(INDEX_PREFIX + key, json.dumps(record, sort_keys=True))
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
        self._cache.delete(INDEX_PREFIX + key)
        return self._cache.delete(RESULT_PREFIX + key)

    def __contains__(self, key: str) -> bool:
        return (RESULT_PREFIX + _check_key(key)) in self._cache

    # ---- aliases: a request (what the user asked for) -> the key of its Result

    def set_alias(self, alias: str, key: str) -> None:
        """Remember that request ALIAS produced the Result under KEY, so a page can show a
        computed Result at once without rebuilding the model to fingerprint its weights."""
        if self.read_only:
            return  # served from a read-only folder: nothing to remember
        self._cache.set(ALIAS_PREFIX + _check_key(alias), json.dumps({"key": _check_key(key)}))

    def get_by_alias(self, alias: str) -> Result | None:
        record = self._read_json(ALIAS_PREFIX + _check_key(alias))
        if not record or not isinstance(record.get("key"), str):
            return None
        return self.get(record["key"])

    # ---- listing

    def ls(self) -> list[dict]:
        """One dict per cached Result (key, analysis, model, data, size, created), newest first."""
        stored_keys = [k for k in self._cache.iterkeys() if isinstance(k, str)]
        results = {k[len(RESULT_PREFIX):] for k in stored_keys if k.startswith(RESULT_PREFIX)}
        for stored in stored_keys:
            # Eviction may take a Result and leave its index record; drop such orphans.
            if stored.startswith(INDEX_PREFIX) and stored[len(INDEX_PREFIX):] not in results:
                self._cache.delete(stored)
        rows = []
        for key in results:
            record = self._read_json(INDEX_PREFIX + key) or {}
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
