"""Configured folders, and resolving user-given paths safely inside them.

Paths that come from a URL or the dashboard's sidebar are relative to a configured root (data or
checkpoints) and must stay inside it: no absolute paths, no "..", no URL-encoded tricks, no symlink
that leads out. The CLI takes paths as given (it runs as the user, on the user's own files).
"""
from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import unquote

from ..errors import VitlensError
from ..models.checkpoints import SUFFIXES


def _root(env: str, default: str) -> Path:
    return Path(os.path.expanduser(os.environ.get(env) or default)).resolve()


def data_root() -> Path:
    """$VITLENS_DATA_ROOT, default ~/.cache/vitlens/data."""
    return _root("VITLENS_DATA_ROOT", "~/.cache/vitlens/data")


def checkpoint_root() -> Path:
    """$VITLENS_CHECKPOINT_ROOT, default ~/.cache/vitlens/checkpoints."""
    return _root("VITLENS_CHECKPOINT_ROOT", "~/.cache/vitlens/checkpoints")


def experiment_root() -> Path:
    """$VITLENS_EXPERIMENT_ROOT, default ~/.cache/vitlens/experiments: each trained cell's folder
    (named by what decides its training, never by a user's path)."""
    return _root("VITLENS_EXPERIMENT_ROOT", "~/.cache/vitlens/experiments")


def resolve_inside(root: Path, user_path: str, what: str = "path") -> Path:
    """ROOT / USER_PATH, refused unless it stays inside ROOT (after decoding and following links)."""
    text = str(user_path or "").strip()
    decoded = text
    for _ in range(3):  # undo repeated URL-encoding such as %252e%252e
        decoded = unquote(decoded)
    if not decoded or "\x00" in decoded:
        raise VitlensError(f"empty or invalid {what}")
    candidate = Path(decoded)
    if candidate.is_absolute() or decoded.startswith(("~", "\\")) or ".." in candidate.parts:
        raise VitlensError(f"{what} '{text}' must be relative to {root} and stay inside it")
    root = Path(root).resolve()
    full = (root / candidate).resolve()  # follows symlinks
    if full != root and root not in full.parents:
        raise VitlensError(f"{what} '{text}' leads outside {root}; refused")
    return full


def list_checkpoints(root: Path | None = None, limit: int = 500) -> list[str]:
    """Checkpoint files under the checkpoint root, as paths relative to it."""
    root = checkpoint_root() if root is None else Path(root)
    if not root.is_dir():
        return []
    found = []
    for path in sorted(root.rglob("*")):
        if path.is_file() and path.name.endswith(SUFFIXES):
            try:
                resolve_inside(root, str(path.relative_to(root)))
            except VitlensError:
                continue  # a symlink out of the root
            found.append(str(path.relative_to(root)))
            if len(found) >= limit:
                break
    return found
