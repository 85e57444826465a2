"""Lanczos stopping rules on real Hessians: products used and how often the top-k come out wrong.

    python benchmarks/bench_lanczos_stop.py --threads 1            # demo_resnet + demo_vit, ~20 min on 1 thread
    python benchmarks/bench_lanczos_stop.py --models demo_resnet --batches 16 --seeds 2   # quicker

For each model (shipped weights), data kind (digits; N(0, 1) images with uniform labels) and batch
size, one long Lanczos run (--ref-steps, its own start vector) gives the reference spectrum, and
--seeds runs of --steps steps from other start vectors are recorded once. Each stopping rule is then
replayed on the prefixes of the recorded runs (a rule only sees T's first m rows, so replaying is the
same as stopping), for k = 1, 2, 5 at tol = 1e-2:

  * residual: every top-k Ritz pair with ||r|| <= tol |theta| (the rigorous bound; the default);
  * gap:      the tighter of ||r|| and ||r||^2 / gap (`vitlens.hessian.lanczos.error_bounds`; the default is residual).

Reported per rule: mean products (HVPs) at the stop, and failures: runs where some true top-k
eigenvalue has no computed one within tol of it (order-free, so swapped near-equal magnitudes are not
failures). A failure is either a bound that did not hold (the gap was over-estimated) or an eigenvalue
the Krylov space had not found yet when the rule stopped; no Krylov rule can see the latter, and a
rule that stops earlier gives it less time to appear.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import vitlens  # noqa: E402
from bench_hessian import batch_of  # noqa: E402
from vitlens.hessian import hessian_operator, lanczos  # noqa: E402
from vitlens.hessian.lanczos import BOUNDS, Tridiagonal, error_bounds  # noqa: E402


def record(model, batch, steps: int, seeds: int, ref_steps: int):
    """(reference eigenvalues, [(alpha, beta)] per seed)."""
    with hessian_operator(model, batch) as op:
        ref = lanczos(op.matvec, torch.randn(op.dim, generator=torch.Generator().manual_seed(99)), ref_steps)
        runs = [lanczos(op.matvec, torch.randn(op.dim, generator=torch.Generator().manual_seed(s)), steps)
                for s in range(seeds)]
    return torch.linalg.eigvalsh(ref.matrix()), [(r.alpha, r.beta) for r in runs]


def replay(alpha, beta, k: int, tol: float, bound: str):
    """(products at the stop, top-k Ritz values then) for BOUND on a recorded run."""
    for m in range(k, len(alpha) + 1):
        t = Tridiagonal(alpha[:m], beta[:m])
        theta, S = t.ritz()
        residual = abs(t.beta[-1]) * S[-1].abs()
        order = torch.argsort(theta.abs(), descending=True)[:k]
        bounds = error_bounds(theta, residual, bound)[order]
        if bool(torch.all(bounds <= tol * theta[order].abs())):
            break
    return m, theta[order].tolist()


def failed(values, truth, tol: float) -> bool:
    return any(min(abs(v - t) for v in values) > tol * abs(t) for t in truth)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["demo_resnet", "demo_vit"])
    parser.add_argument("--kinds", nargs="+", default=["digits", "random"], choices=["digits", "random"])
    parser.add_argument("--batches", nargs="+", type=int, default=[4, 16, 64])
    parser.add_argument("--seeds", type=int, default=4)
    parser.add_argument("--steps", type=int, default=25)
    parser.add_argument("--ref-steps", type=int, default=60)
    parser.add_argument("--ks", nargs="+", type=int, default=[1, 2, 5])
    parser.add_argument("--tol", type=float, default=1e-2)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    totals = {b: [0, 0, 0] for b in BOUNDS}  # failures, products, runs
    print("| model | data | batch | k | " + " | ".join(f"{b}: HVPs, failures" for b in BOUNDS) + " |")
    print("|---|---|---|---|" + "---|" * len(BOUNDS))
    for name in args.models:
        model = vitlens.load_model(name, pretrained=True).eval()
        for kind in args.kinds:
            for n in args.batches:
                if kind == "digits":
                    batch = batch_of(model, n, offset=7 * n)
                else:
                    g = torch.Generator().manual_seed(n)
                    batch = torch.randn(n, 3, 32, 32, generator=g), torch.randint(0, 10, (n,), generator=g)
                ref, runs = record(model, batch, args.steps, args.seeds, args.ref_steps)
                for k in args.ks:
                    truth = ref[torch.argsort(ref.abs(), descending=True)[:k]].tolist()
                    cells = []
                    for b in BOUNDS:
                        outs = [replay(a, be, k, args.tol, b) for a, be in runs]
                        fails = sum(failed(v, truth, args.tol) for _, v in outs)
                        hvps = sum(m for m, _ in outs)
                        totals[b][0] += fails
                        totals[b][1] += hvps
                        totals[b][2] += len(outs)
                        cells.append(f"{hvps / len(outs):.1f}, {fails}/{len(outs)}")
                    print(f"| {name} | {kind} | {n} | {k} | " + " | ".join(cells) + " |", flush=True)
    print("\n| rule | mean HVPs | failures |\n|---|---|---|")
    for b, (fails, hvps, runs) in totals.items():
        print(f"| {b} | {hvps / runs:.2f} | {fails}/{runs} |")


if __name__ == "__main__":
    main()
