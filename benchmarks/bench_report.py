"""The HTML report's speed: the three shipped demo models, cold cache then warm, medians.

    python benchmarks/bench_report.py                  # README's findings settings (samples 128)
    python benchmarks/bench_report.py --repeats 7 --cache /tmp/vl_cache

Cold: `vitlens.report.gather` + `render` of demo_resnet_deep, demo_vit_deep and demo_alternet with
the findings settings of README's scoreboard (`vitlens.analyses.findings.README_SETTINGS`), on a fresh
temporary VITLENS_CACHE_DIR: every sub-analysis and each model's evaluation is computed (one
measurement). Warm: the same report again from the cache (gather + render + writing the file),
REPEATS times. Anchor, in the same run: `engine.run` of the findings request alone from the cache
(the scoreboard without any figure), so the ratio says what drawing ~40 figures into one file costs.
Target: warm < 10 s on CPU. Exit status 1 when the warm median misses it.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MODELS = ["demo_resnet_deep", "demo_vit_deep", "demo_alternet"]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--cache", help="VITLENS_CACHE_DIR to use (default: a fresh temporary one)")
    args = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="vl_bench_report_")
    os.environ["VITLENS_CACHE_DIR"] = args.cache or str(Path(tmp) / "results")
    sys.path.insert(0, str(ROOT))
    from vitlens.analyses.findings import README_SETTINGS
    from vitlens.engine import run
    from vitlens.report import findings_spec, gather, render
    from vitlens.request import JobSpec

    base = JobSpec(analysis="findings", samples=README_SETTINGS["samples"], device="cpu")
    options = README_SETTINGS["params"]
    out = Path(tmp) / "report.html"

    def report() -> float:
        start = time.perf_counter()
        out.write_text(render(gather(base, MODELS, options)))
        return time.perf_counter() - start

    cold = report()
    warm = [report() for _ in range(args.repeats)]
    anchor = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        run(findings_spec(base, MODELS, options))
        anchor.append(time.perf_counter() - start)
    med, anchor_med = statistics.median(warm), statistics.median(anchor)
    print(f"report of {', '.join(MODELS)} ({README_SETTINGS}), {out.stat().st_size / 1e6:.1f} MB")
    print(f"cold (computes everything): {cold:.1f} s")
    print(f"warm median of {args.repeats}: {med:.2f} s (min {min(warm):.2f}, max {max(warm):.2f})")
    print(f"anchor, the findings request from the cache: {anchor_med:.3f} s; warm report / anchor = "
          f"{med / anchor_med:.0f}x")
    return 0 if med < 10.0 else 1


if __name__ == "__main__":
    sys.exit(main())
