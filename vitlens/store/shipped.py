"""Results shipped inside the package: the default view of every dashboard page for the demo models,
and the demo scoreboard, so a newcomer's first views answer at once.

`scripts/make_demo_results.py` computes them from the shipped demo weights into
`vitlens/assets/demo_results/`: a result-cache folder in the cache's own format (sealed Parquet and
JSON entries, no pickles) with a `manifest.json` that names the vitlens version that made them and
every request in it. `engine.cached_result` looks there after the user's cache misses, read-only
(nothing is written into the package; a recomputation with other parameters goes to the user's
cache as always). When the manifest's version is not this vitlens, the folder is ignored and every
request is computed as if nothing were shipped (the cache keys carry the version too).

VITLENS_DEMO_RESULTS: another folder made by the script, or `off` (the test suite's default, so
its tests compute what they check).
"""
from __future__ import annotations

import functools
import json
import logging
import os
import sqlite3
from pathlib import Path

from ..version import __version__ as VERSION
from .cache import ResultCache
from ..errors import VitlensError
from ..result import Result

SHIPPED = Path(__file__).resolve().parents[1] / "assets" / "demo_results"
MANIFEST = "manifest.json"


def location() -> Path | None:
    """The shipped Results' folder ($VITLENS_DEMO_RESULTS, default the package's), or None when off."""
    setting = (os.environ.get("VITLENS_DEMO_RESULTS") or "").strip()
    if setting.lower() in ("off", "0", "none", "no"):
        return None
    return Path(setting).expanduser() if setting else SHIPPED


def manifest(folder: Path) -> dict | None:
    """FOLDER's manifest ({"vitlens": version, "requests": [...]}), or None when there is none."""
    try:
        data = json.loads((folder / MANIFEST).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


@functools.lru_cache(maxsize=4)
def _store(folder: Path) -> ResultCache | None:
    """FOLDER opened read-only, once per process; None when its manifest is not this version's."""
    made = manifest(folder)
    if made is None or made.get("vitlens") != VERSION:
        return None  # made by another vitlens: its Results may differ, so nothing is served from it
    try:
        return ResultCache(folder, read_only=True)
    except (OSError, sqlite3.Error, VitlensError) as err:  # a damaged folder serves nothing, in one line
        logging.getLogger(__name__).warning("shipped Results in %s not used: %s", folder, err)
        return None


def shipped_result(request: str) -> Result | None:
    """The shipped Result of REQUEST (an `engine.request_id`), or None."""
    folder = location()
    store = _store(folder) if folder is not None else None
    if store is None:
        return None
    try:
        result = store.get_by_alias(request)
    except (OSError, sqlite3.Error, VitlensError):
        return None
    if result is not None:
        result.meta["shipped"] = VERSION  # precomputed with the package (the page says so)
    return result
