"""The memory estimate (`vitlens.budget`) against measured peaks, and how fast a request is refused.

    python benchmarks/bench_sizing.py            # the cases below, each in a fresh process, CPU
    python benchmarks/bench_sizing.py --quick    # fewer cases (the test suite's)

Measured: in a fresh process per case, the resident set (RSS, /proc/self/statm) is sampled every
millisecond by a thread while `engine.run` builds the model, loads the data and computes (no cache);
the peak minus the RSS just before is the measured peak of the request (weights included, imports
not). On a GPU `torch.cuda.max_memory_allocated` would be the measure; this machine has none. The
ratio estimate / measured is printed per case, with its median and range; the target is 0.5x-2x.
Refusal: `budget.check` of requests far over the budget (a ViT of embed_dim 16384, a timm giant) in
a fresh process: seconds and RSS growth.
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

ROOT = Path(__file__).resolve().parents[1]
TIMM_VIT = ("timm:vit_tiny_patch16_224", {"num_classes": 10})
TIMM_RESNET = ("timm:resnet18", {"num_classes": 10})
CASES = [  # (analysis, model, model_args, batch, samples, params)
    ("evaluate", *TIMM_VIT, 32, 64, {}),
    ("evaluate", *TIMM_VIT, 128, 128, {}),
    ("evaluate", *TIMM_RESNET, 32, 64, {}),
    ("evaluate", *TIMM_RESNET, 128, 128, {}),
    ("fourier", *TIMM_VIT, 64, 64, {}),
    ("variance", *TIMM_RESNET, 64, 64, {}),
    ("hessian", "demo_vit", {}, 128, 128, {"what": "topk", "top_k": 1, "max_steps": 4}),
    ("hessian", "demo_vit", {}, 512, 512, {"what": "topk", "top_k": 1, "max_steps": 4}),
    ("hessian", "demo_resnet", {}, 256, 256, {"what": "topk", "top_k": 1, "max_steps": 4}),
    ("hessian", *TIMM_RESNET, 8, 8, {"what": "topk", "top_k": 1, "max_steps": 2}),
    ("hessian", *TIMM_RESNET, 16, 16, {"what": "topk", "top_k": 1, "max_steps": 2}),
    ("landscape", *TIMM_VIT, 32, 64, {"grid": 2}),
    ("landscape", "demo_vit", {}, 256, 1024, {"grid": 2}),
]
QUICK = [0, 2, 7, 10]

MEASURE = r'''
import json, os, sys, threading, time
import torch
torch.set_num_threads(2)
from vitlens.budget import estimate
from vitlens.engine import run
from vitlens.request import JobSpec
spec = JobSpec(**json.loads(sys.argv[1]))
page = os.sysconf("SC_PAGE_SIZE")
def rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * page
peak, done = [0], threading.Event()
def sample():
    while not done.is_set():
        peak[0] = max(peak[0], rss())
        time.sleep(0.001)
guess = estimate(spec).bytes
before = rss()
thread = threading.Thread(target=sample, daemon=True)
thread.start()
run(spec, use_cache=False)
done.set(); thread.join()
peak[0] = max(peak[0], rss())
print(json.dumps({"estimate": guess, "measured": peak[0] - before}))
'''

REFUSE = r'''
import json, resource, time
from vitlens.budget import check
from vitlens.errors import VitlensError
from vitlens.request import JobSpec
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
rows = []
for model, args in [("demo_vit", {"embed_dim": 16384}), ("timm:vit_giant_patch14_224", {}),
                    ("timm:vit_large_patch16_224", {"num_classes": 10})]:
    t = time.perf_counter()
    try:
        check(JobSpec(analysis="hessian", model=model, model_args=args, batch_size=256, params={"what": "topk"}))
        line = "accepted"
    except VitlensError as err:
        line = str(err)
    rows.append([model, json.dumps(args), round(time.perf_counter() - t, 3), line[:150]])
print(json.dumps({"rows": rows, "grown_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before}))
'''


def measure(case, env) -> dict:
    analysis, model, args, batch, samples, params = case
    spec = dict(analysis=analysis, model=model, model_args=args, batch_size=batch, samples=samples, device="cpu",
                params=params)
    out = subprocess.run([sys.executable, "-c", MEASURE, json.dumps(spec)], capture_output=True, text=True,
                         env=env, cwd=ROOT, timeout=900)
    if out.returncode != 0:
        raise RuntimeError(out.stderr.strip().splitlines()[-1])
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    env = dict(os.environ, VITLENS_CACHE_DIR=tempfile.mkdtemp(prefix="vl_bench_sizing_"), PYTHONPATH=str(ROOT),
               VITLENS_MAX_MEMORY="1T")
    ratios = []
    print("| analysis | model | batch | samples | options | estimate MiB | measured MiB | estimate / measured |")
    print("|---|---|---|---|---|---|---|---|")
    for k, case in enumerate(CASES):
        if args.quick and k not in QUICK:
            continue
        got = measure(case, env)
        ratio = got["estimate"] / max(got["measured"], 1)
        ratios.append(ratio)
        analysis, model, _, batch, samples, params = case
        print(f"| {analysis} | {model} | {batch} | {samples} | {json.dumps(params)} | {got['estimate'] / 2**20:.0f} | "
              f"{got['measured'] / 2**20:.0f} | {ratio:.2f} |", flush=True)
    print(f"\nestimate / measured: median {statistics.median(ratios):.2f}, min {min(ratios):.2f}, max {max(ratios):.2f}")
    out = subprocess.run([sys.executable, "-c", REFUSE], capture_output=True, text=True, env=dict(env, VITLENS_MAX_MEMORY=""),
                         cwd=ROOT, timeout=300)
    refused = json.loads(out.stdout.strip().splitlines()[-1])
    print("\nrefused before anything is built (fresh process, first call includes importing timm):")
    for model, margs, seconds, line in refused["rows"]:
        print(f"  {model} {margs}: {seconds:.2f} s — {line}")
    print(f"  the process grew by {refused['grown_kib'] / 1024:.0f} MiB")
    return 0 if 0.5 <= min(ratios) and max(ratios) <= 2.0 else 1


if __name__ == "__main__":
    sys.exit(main())
