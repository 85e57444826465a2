"""Loss-landscape speed: ratios against anchors measured in the same run, interleaved, medians.

    python benchmarks/bench_landscape.py                       # both parts, markdown tables on stdout
    python benchmarks/bench_landscape.py --skip-statistical    # per-point part only

Part 1, time per grid point (each repetition times every method once, in rotating order):
  * anchor  "plain":  one evaluation pass of the unmodified model over the same prepared samples
            (``F.cross_entropy(model(x), y)`` per batch, no_grad, eval mode);
  * "vitlens": `PointEvaluator.evaluate((a, b))`: in-place offsets + per-sample NLL, accuracy, L2;
  * "paper":  the algorithm of Park & Kim's ``get_loss_landscape`` (written here from its
            description): deep-copy the saved state dict, add ``a*d1 + b*d2`` to every entry
            (stacked and summed), ``load_state_dict``, evaluate, then the L1 and L2 norms.
  Targets: vitlens / plain <= 1.15; vitlens / paper <= 1.

Part 2, statistical mode on a 21x21 surface of a demo model: at every checked grid point the full
evaluation and the statistical one are timed back to back (alternating which goes first) and
|statistical - full| is checked against the stated bound max(tolerance, rtol * |loss|); the cost
ratio is (statistical time of the whole grid, centre control included) / (median full time per
point x points). ``--check-points K`` checks K seeded random points instead of all (for large
sample counts, where the full grid takes too long on a CPU). Target: all within, cost <= 1/5.
"""
from __future__ import annotations

import argparse
import copy
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from vitlens import load_model  # noqa: E402
from vitlens.data import load_data  # noqa: E402
from vitlens.landscape import PointEvaluator, grid_axis, prepare_samples, random_directions  # noqa: E402
from vitlens.landscape.surface import eval_mode  # noqa: E402


def _model(name: str):
    try:
        return load_model(name, pretrained=True), "trained"
    except Exception:
        return load_model(name), "random init"


@torch.no_grad()
def plain_pass(model, samples):
    total = 0.0
    for x, t, _ in samples.batches:
        total += F.cross_entropy(model(x), t, reduction="sum").item()
    return total / samples.count


class PaperBaseline:
    """Park & Kim's per-point loop: state-dict copy + offsets + load_state_dict + evaluate + norms."""

    def __init__(self, model, directions):
        self.model = model
        self.ws0 = copy.deepcopy(model.state_dict())
        # their bases cover the whole state dict (buffers get zero offsets)
        self.bases = [{k: (d[k] if k in d else torch.zeros_like(v, dtype=torch.float32)) for k, v in self.ws0.items()}
                      for d in directions]

    @torch.no_grad()
    def evaluate(self, ratio, samples):
        ws = copy.deepcopy(self.ws0)
        gs = [{k: r * b[k] for k in b} for r, b in zip(ratio, self.bases)]
        gs = {k: torch.sum(torch.stack([g[k] for g in gs]), dim=0) + ws[k] for k in gs[0]}
        self.model.load_state_dict(gs)
        nll = plain_pass(self.model, samples)
        l1 = sum(torch.norm(p, 1) for p in self.model.parameters()).item()
        l2 = sum(torch.norm(p) for p in self.model.parameters()).item()
        return nll, l1, l2

    def restore(self):
        self.model.load_state_dict(self.ws0)


def per_point(name: str, samples_n: int, batch_size: int, reps: int) -> dict:
    model, weights = _model(name)
    data = load_data("digits", "test", samples=samples_n, seed=0, model=model)
    samples = prepare_samples(data, batch_size, seed=0, shuffle=False)
    directions = random_directions(model, 2, seed=0)
    times = {"plain": [], "vitlens": [], "paper": []}
    coords = [(0.3, -0.2), (-0.5, 0.4), (0.1, 0.9)]
    with eval_mode(model):
        fast = PointEvaluator(model, samples, directions, weight_decay=5e-2)
        paper = PaperBaseline(model, directions)
        methods = {"plain": lambda c: plain_pass(model, samples),
                   "vitlens": lambda c: fast.evaluate(c),
                   "paper": lambda c: paper.evaluate(c, samples)}
        order = list(methods)
        for rep in range(reps + 1):  # the first repetition warms up and is dropped
            order = order[1:] + order[:1]
            for method in order:
                c = coords[rep % len(coords)]
                start = time.perf_counter()
                methods[method](c)
                took = time.perf_counter() - start
                if method == "paper":
                    paper.restore()
                else:
                    fast.restore()
                if rep:
                    times[method].append(took)
        fast.restore()
    med = {k: statistics.median(v) for k, v in times.items()}
    return dict(model=f"{name} ({weights})", params=sum(p.numel() for p in model.parameters()),
                samples=samples.count, reps=reps, plain_s=med["plain"], vitlens_s=med["vitlens"],
                paper_s=med["paper"], vitlens_over_plain=statistics.median(
                    [v / p for v, p in zip(times["vitlens"], times["plain"])]),
                vitlens_over_paper=statistics.median([v / p for v, p in zip(times["vitlens"], times["paper"])]))


def statistical(name: str, samples_n: int, batch_size: int, grid: int, tolerance: float, rtol: float,
                z: float, min_batches: int, split: str = "test", check_points: int = 0) -> dict:
    """CHECK_POINTS > 0: compare only that many seeded random grid points with the full evaluation
    (the full cost is then median full time per point x points); 0: every point."""
    model, weights = _model(name)
    data = load_data("digits", split, samples=samples_n, seed=0, model=model)
    samples = prepare_samples(data, batch_size, seed=0, shuffle=True)
    directions = random_directions(model, 2, seed=0)
    xs = grid_axis(grid, -1, 1)
    full_t, stat_t, within, worst, sample_counts = [], [], 0, 0.0, []
    with eval_mode(model):
        full = PointEvaluator(model, samples, directions, weight_decay=5e-2)
        stat = PointEvaluator(model, samples, directions, weight_decay=5e-2, tolerance=tolerance, rtol=rtol,
                              z=z, min_batches=min_batches)
        start = time.perf_counter()
        stat.set_control()  # the centre on every sample: part of the statistical cost
        control_s = time.perf_counter() - start
        k = 0
        total = grid * grid
        checked = set(range(total))
        if 0 < check_points < total:
            checked = set(torch.randperm(total, generator=torch.Generator().manual_seed(0))[:check_points].tolist())
        for y in xs:
            for x in xs:
                check = k in checked
                runs = [("full", full), ("stat", stat)] if k % 2 == 0 else [("stat", stat), ("full", full)]
                runs = runs if check else [("stat", stat)]
                rows = {}
                for label, ev in runs:
                    start = time.perf_counter()
                    rows[label] = ev.evaluate((x, y))
                    (full_t if label == "full" else stat_t).append(time.perf_counter() - start)
                k += 1
                sample_counts.append(rows["stat"]["samples"])
                if not check:
                    continue
                f, s = rows["full"], rows["stat"]
                bound = max(tolerance, rtol * abs(f["loss"]))
                error = abs(s["loss"] - f["loss"])
                within += error <= bound or not f["finite"] and not s["finite"]
                worst = max(worst, error / bound)
        full.restore()
    full_cost = statistics.median(full_t) * total
    return dict(model=f"{name} ({weights})", grid=f"{grid}x{grid}", split=split, samples=samples.count,
                tolerance=tolerance, rtol=rtol, z=z, checked=len(full_t), within=within,
                worst_error_over_bound=worst, cost_ratio=(sum(stat_t) + control_s) / full_cost,
                sample_fraction=(sum(sample_counts) + samples.count) / (samples.count * len(sample_counts)),
                full_s=full_cost)


def table(rows: list[dict], columns: list[str]) -> str:
    def fmt(v):
        return f"{v:.3g}" if isinstance(v, float) else str(v)
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(fmt(r[c]) for c in columns) + " |" for r in rows]
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="demo_resnet,resnet18_cifar")
    parser.add_argument("--samples", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--reps", type=int, default=7)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--skip-statistical", action="store_true")
    parser.add_argument("--stat-model", default="demo_resnet")
    parser.add_argument("--stat-samples", type=int, default=256)
    parser.add_argument("--stat-batch-size", type=int, default=16)
    parser.add_argument("--stat-grid", type=int, default=21)
    parser.add_argument("--tolerance", type=float, default=0.05)
    parser.add_argument("--rtol", type=float, default=0.02)
    parser.add_argument("--z", type=float, default=3.0)
    parser.add_argument("--min-batches", type=int, default=2)
    parser.add_argument("--stat-split", default="test", choices=["train", "test"])
    parser.add_argument("--check-points", type=int, default=0, help="verify only this many points (0: all)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, CPU\n")
    rows = [per_point(name, args.samples, args.batch_size, args.reps) for name in args.models.split(",")]
    print("Time per grid point (medians; ratios are medians of per-repetition ratios)\n")
    print(table(rows, ["model", "params", "samples", "reps", "plain_s", "vitlens_s", "paper_s",
                       "vitlens_over_plain", "vitlens_over_paper"]))
    sys.stdout.flush()
    if not args.skip_statistical:
        row = statistical(args.stat_model, args.stat_samples, args.stat_batch_size, args.stat_grid, args.tolerance,
                          args.rtol, args.z, args.min_batches, args.stat_split, args.check_points)
        print("\nStatistical mode vs full evaluation (every point; bound = max(tolerance, rtol*|loss|))\n")
        print(table([row], ["model", "grid", "split", "samples", "tolerance", "rtol", "z", "checked", "within",
                            "worst_error_over_bound", "cost_ratio", "sample_fraction", "full_s"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
