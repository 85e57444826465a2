"""Compute the Results shipped inside the package (`vitlens.store.shipped`): the default view of every
dashboard page for each demo model, the landing page's and Compare's views, and the demo scoreboard.

    python scripts/make_demo_results.py            # writes vitlens/assets/demo_results/ (a few minutes on CPU)
    python scripts/make_demo_results.py --check    # exit 1 when the folder is missing, stale or incomplete

Run it after a change that moves a demo Result (and with every version bump: a folder made by
another vitlens version is ignored). Everything is computed on the CPU from the shipped demo weights,
into a private cache first; the folder then holds those entries (partial landscape grids left out),
inline in one SQLite file, with the cache's secret and `manifest.json`.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sqlite3
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

DEMOS = ("demo_resnet", "demo_vit", "demo_alternet")


def demo_specs() -> list:
    """Every request a page makes with its defaults for a demo model (as the pages build them)."""
    from vitlens.analyses import pages
    from vitlens.analyses.findings import scoreboard_spec
    from vitlens.figures import COMPARE_VIEWS  # the Compare page's views (and error_vs_nll: evaluate, below)
    from vitlens.links import page_params
    from vitlens.request import JobSpec

    base = JobSpec(analysis="")
    specs = [scoreboard_spec(replace(base, analysis="evaluate"))]  # landing page and Findings page
    for model in DEMOS:
        for declared in pages():
            if declared.name != "findings":  # its page's base model is demo_resnet (scoreboard_spec)
                specs.append(replace(base, analysis=declared.name, model=model, params=page_params(declared.name, {})))
        specs += [replace(base, analysis="evaluate", model=model, params={}),  # landing page, Compare
                  replace(base, analysis="evaluate", model=model, split="train", params={})]
        specs += [replace(base, analysis=view, model=model, params={}) for view in COMPARE_VIEWS]
    unique = {}
    for spec in specs:
        unique.setdefault(spec.to_json(), spec)
    return list(unique.values())


def make(out: Path) -> None:
    os.environ["VITLENS_DEMO_RESULTS"] = "off"  # compute everything, serve nothing from an older folder
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["VITLENS_CACHE_DIR"] = str(Path(tmp) / "cache")
        from vitlens import __version__
        from vitlens.store.cache import ResultCache
        from vitlens.store.disk import DataOnlyDisk
        from vitlens.store.private import SECRET_FILE
        from vitlens.engine import request_id, run
        import diskcache

        entries = []
        for spec in demo_specs():
            start = time.perf_counter()
            result, _ = run(spec)
            entries.append(dict(spec=spec.to_dict(), request=request_id(spec), key=result.meta.get("key")))
            print(f"{spec.analysis:>10} {spec.model:<14} {spec.split:<5} {time.perf_counter() - start:6.1f} s",
                  flush=True)
        cache_folder = Path(tmp) / "cache"
        with ResultCache(cache_folder) as cache:
            partial = {row["key"] for row in cache.ls() if str(row["analysis"]).endswith("(partial)")}
        staged = Path(tmp) / "demo_results"
        staged.mkdir()
        source = diskcache.Cache(str(cache_folder), disk=DataOnlyDisk)
        # every value inline in the one database file (no value files to ship)
        target = diskcache.Cache(str(staged), disk=DataOnlyDisk, disk_min_file_size=2 ** 30, size_limit=2 ** 40)
        for key in source.iterkeys():
            if isinstance(key, str) and not any(key.endswith(k) for k in partial):
                target.set(key, source.get(key))
        source.close()
        target.close()
        db = sqlite3.connect(staged / "cache.db")
        db.execute("PRAGMA journal_mode=DELETE")  # one self-contained file, read with SQLite's immutable mode
        db.execute("VACUUM")
        db.close()
        shutil.copy(cache_folder / SECRET_FILE, staged / SECRET_FILE)
        (staged / "manifest.json").write_text(json.dumps(dict(
            vitlens=__version__, made_by="scripts/make_demo_results.py",
            note="computed on the CPU from the shipped demo weights; served read-only as if cached",
            requests=entries), indent=1, sort_keys=True) + "\n")
        if out.exists():
            shutil.rmtree(out)
        shutil.copytree(staged, out)
    size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    print(f"{len(entries)} requests, {size / 2 ** 20:.2f} MiB in {out}")


def check(out: Path) -> int:
    """1 when OUT's manifest is not this version's or misses a page's default request."""
    from vitlens import __version__
    from vitlens.engine import request_id
    from vitlens.store.shipped import manifest

    made = manifest(out)
    if made is None or made.get("vitlens") != __version__:
        print(f"{out}: missing or made by another vitlens; run scripts/make_demo_results.py", file=sys.stderr)
        return 1
    shipped = {e["request"] for e in made["requests"]}
    missing = [s for s in demo_specs() if request_id(s) not in shipped]
    for spec in missing:
        print(f"{out}: no shipped Result for {spec.analysis} on {spec.model} ({spec.split})", file=sys.stderr)
    return 1 if missing else 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true")
    parser.add_argument("--out", type=Path, default=ROOT / "vitlens" / "assets" / "demo_results")
    args = parser.parse_args()
    sys.exit(check(args.out) if args.check else make(args.out))
