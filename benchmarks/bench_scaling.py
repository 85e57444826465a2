"""Scaling of the landscape grid (and the Hessian spectrum) from 1 to N torchrun ranks.

Not a test: run by hand. Each rank gets one thread (OMP_NUM_THREADS=1), so on a 2-core machine
1 -> 2 ranks is the whole machine. Time = the Result's compute seconds (meta["seconds"], model and
data loading included, interpreter start-up excluded), median over --reps interleaved runs.
Efficiency = T(1) / (N * T(N)).

    python benchmarks/bench_scaling.py --ranks 2 --reps 3
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

JOBS = {
    "landscape 9x9": ["landscape", "--model", "demo_resnet", "--grid", "9", "--samples", "256", "--batch-size", "64"],
    "hessian spectrum 8x16": ["hessian", "--what", "spectrum", "--model", "demo_resnet", "--samples", "128",
                              "--minibatch", "16", "--top-k", "5"],
}


def timed(args: list[str], ranks: int, out: Path) -> float:
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    launcher = [sys.executable] if ranks == 1 else [sys.executable, "-m", "torch.distributed.run",
                                                   "--nproc-per-node", str(ranks)]
    cmd = [*launcher, "-m", "vitlens", "run", *args, "--device", "cpu", "--no-cache", "--out", str(out)]
    subprocess.run(cmd, check=True, capture_output=True, env=env)
    return float(json.loads(out.read_text())["meta"]["seconds"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ranks", type=int, default=2)
    parser.add_argument("--reps", type=int, default=3)
    args = parser.parse_args()
    print(f"| job | 1 rank (s) | {args.ranks} ranks (s) | speed-up | efficiency |")
    print("|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for name, job in JOBS.items():
            one, many = [], []
            for rep in range(args.reps):  # interleave, alternating which goes first
                order = [(1, one), (args.ranks, many)]
                for ranks, bucket in (order if rep % 2 == 0 else order[::-1]):
                    bucket.append(timed(job, ranks, Path(tmp) / f"r{ranks}.json"))
            t1, tn = statistics.median(one), statistics.median(many)
            print(f"| {name} | {t1:.2f} | {tn:.2f} | {t1 / tn:.2f}x | {t1 / (args.ranks * tn):.0%} |")


if __name__ == "__main__":
    main()
