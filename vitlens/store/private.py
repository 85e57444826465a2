"""The cache folder's privacy and seals: a folder only its owner can read or write (0700), and an
HMAC key inside it (`secret.key`, 0600) that seals every stored entry, so an entry written by anyone
without the key is refused, never loaded (diskcache would unpickle it: CVE-2025-69872).

The key is written whole or not at all (a temporary file, fsync, then a link to its name, which
fails if another process made it first), and a key of the wrong length (a write cut short by a full
disk) is refused and replaced: entries sealed with it no longer verify and are dropped when read.
"""
from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import stat
from pathlib import Path
from typing import Any

from ..errors import VitlensError

_DEFAULT_DIR = "~/.cache/vitlens/results"
SECRET_FILE = "secret.key"
SECRET_SIZE = 32
ENVELOPE_MAGIC = b"VLC2"  # VLC2: the checksum is an HMAC keyed with the folder's secret
_DIGEST_SIZE = hashlib.sha256().digest_size


class UnsafeEntry(Exception):
    """A stored entry that would need unpickling (or pickling) to use, or whose seal is wrong; never loaded."""


def ensure_private_dir(path: Path) -> Path:
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
    return ensure_private_dir(Path(os.environ.get("VITLENS_CACHE_DIR") or _DEFAULT_DIR))


def _write_secret(path: Path, replace: bool) -> None:
    """A new key at PATH, written whole before it gets its name (REPLACE: over a bad one)."""
    tmp = path.with_name(f".{SECRET_FILE}.{os.getpid()}.{secrets.token_hex(4)}")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as out:
            out.write(secrets.token_bytes(SECRET_SIZE))
            out.flush()
            os.fsync(out.fileno())
        if replace:
            os.replace(tmp, path)
        else:
            try:
                os.link(tmp, path)  # atomic, and refuses to overwrite another process's key
            except FileExistsError:
                pass
    except OSError as error:
        raise VitlensError(f"cannot write the cache's key {path} ({error.strerror or error}); nothing was "
                           "stored") from None
    finally:
        tmp.unlink(missing_ok=True)


def read_secret(directory: Path) -> bytes:
    """The cache folder's HMAC key; created once, whole, 0600. A key of the wrong length is replaced."""
    path = directory / SECRET_FILE
    for attempt in range(2):
        try:
            key = path.read_bytes()
        except FileNotFoundError:
            _write_secret(path, replace=False)
            continue
        if len(key) == SECRET_SIZE:
            return key
        if attempt == 0:  # a short or empty key (a write cut short) seals nothing: never use it
            _write_secret(path, replace=True)
    raise VitlensError(f"the cache's key {path} is not {SECRET_SIZE} bytes and could not be replaced")


def seal(payload: bytes, secret: bytes) -> bytes:
    return ENVELOPE_MAGIC + hmac.new(secret, payload, hashlib.sha256).digest() + payload


def unseal(blob: Any, secret: bytes) -> bytes:
    """The payload of a sealed entry. The seal is an HMAC with the cache's own secret (a 0600 file
    in the folder): an entry written by anyone without that secret is refused, not loaded."""
    if not isinstance(blob, bytes) or not blob.startswith(ENVELOPE_MAGIC):
        raise UnsafeEntry("not a vitlens cache entry")
    start = len(ENVELOPE_MAGIC)
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
