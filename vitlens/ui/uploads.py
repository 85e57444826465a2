"""Checkpoint uploads: private to the session that made them (a folder named from its identity),
read as data only (weights_only / safetensors), under a per-session quota, expired after some days."""
from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path

from ..store.disk import parse_size
from ..errors import VitlensError
from ..models.checkpoints import SUFFIXES as CHECKPOINT_SUFFIXES, read_state_dict
from ..store.paths import checkpoint_root
from .identity import session_id

UPLOADS = "uploads"
UPLOAD_QUOTA = os.environ.get("VITLENS_UPLOAD_QUOTA", "2G")    # per session
UPLOAD_DAYS = float(os.environ.get("VITLENS_UPLOAD_DAYS", "7"))  # older uploads are deleted


def upload_folder() -> str:
    """This session's upload folder, relative to the checkpoint root: uploads are private to it."""
    return f"{UPLOADS}/{hashlib.sha256(session_id().encode()).hexdigest()[:16]}"


def _expire_uploads(root: Path) -> None:
    cutoff = time.time() - UPLOAD_DAYS * 86400
    for path in (root / UPLOADS).glob("*/*"):
        if path.is_file() and path.stat().st_mtime < cutoff:
            path.unlink(missing_ok=True)


def save_upload(upload) -> str:
    """Store an uploaded checkpoint in this session's upload folder (name from its hash); returns
    the path relative to the checkpoint root. It must read as weights (as data only: weights_only /
    safetensors) or it is deleted again; a per-session quota applies and old uploads expire."""
    data = upload.getvalue()
    suffix = next((s for s in CHECKPOINT_SUFFIXES if upload.name.endswith(s)), None)
    if suffix is None:
        raise VitlensError(f"upload '{upload.name}' must be one of {', '.join(CHECKPOINT_SUFFIXES)}")
    root = checkpoint_root()
    _expire_uploads(root)
    folder = root / upload_folder()
    try:
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    except OSError as err:  # e.g. the checkpoint folder is mounted read-only
        raise VitlensError(f"uploads are off on this server: cannot write {root} ({err.strerror})") from None
    used = sum(p.stat().st_size for p in folder.iterdir() if p.is_file())
    if used + len(data) > parse_size(UPLOAD_QUOTA):
        raise VitlensError(f"upload quota of this session ({UPLOAD_QUOTA}, VITLENS_UPLOAD_QUOTA) is used up")
    path = folder / f"{hashlib.sha256(data).hexdigest()[:16]}{suffix}"
    path.write_bytes(data)
    try:
        read_state_dict(path)
    except VitlensError:
        path.unlink(missing_ok=True)  # refused files do not stay
        raise
    return str(path.relative_to(root))
