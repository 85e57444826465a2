"""Loss-landscape speed: ratios against anchors measured in the same run, interleaved, medians.

    python benchmarks/bench_landscape.py                       # both parts, markdown tables on stdout
    python benchmarks/bench_landscape.py --skip-statistical    # per-point part only
    python benchmarks/bench_landscape.py --skip-per-point --threads 1   # statistical part only

Part 1, time per grid point (each repetition times every method once, in rotating order):
  * anchor  "plain":  one evaluation pass of the unmodified model over the same prepared samples
            (``F.cross_entropy(model(x), y)`` per batch, no_grad, eval mode);
  * "vitlens": `PointEvaluator.evaluate((a, b))`: in-place offsets + per-sample NLL, accuracy, L2;
  * "paper":  the algorithm of Park & Kim's ``get_loss_landscape`` (written here from its
            description): deep-copy the saved state dict, add ``a*d1 + b*d2`` to every entry
            (stacked and summed), ``load_state_dict``, evaluate, then the L1 and L2 norms.
  * "stacked4": `PointEvaluator.evaluate_many` of 4 points (one vmap pass over the weights stacked
            per point, per batch), its time / 4: whether several points per pass pay on this device
            (the landscape's ``points_per_pass``; 0 chooses 1 on the CPU).
  Targets: vitlens / plain <= 1.15; vitlens / paper <= 1.

Part 2, statistical mode on a 21x21 surface of each of --stat-models (default demo_resnet and
demo_vit with their shipped weights, the whole train split of the embedded digits set): every grid
point is evaluated in full and in statistical mode, back to back (alternating which goes first),
anchors first (for the statistical evaluator they are its exact sub-grid). Reported: points with
|statistical - full| <= the stated bound max(tolerance, rtol * |loss|) and with <= z * stderr,
the worst error / bound, whether every anchor row equals the full row, the fraction of samples
evaluated (anchors included) and the cost ratio = statistical time of the whole grid (anchors
included) / full time of the whole grid, both summed over the same interleaved run.
Target: every point within the bound, cost <= 1/5.
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
from vitlens.landscape import (PointEvaluator, anchor_indices, grid_axis, prepare_samples,  # noqa: E402
                               random_directions)
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
    times = {"plain": [], "vitlens": [], "paper": [], "stacked4": []}
    coords = [(0.3, -0.2), (-0.5, 0.4), (0.1, 0.9)]
    with eval_mode(model):
        fast = PointEvaluator(model, samples, directions, weight_decay=5e-2)
        paper = PaperBaseline(model, directions)
        methods = {"plain": lambda c: plain_pass(model, samples),
                   "vitlens": lambda c: fast.evaluate(c),
                   "paper": lambda c: paper.evaluate(c, samples),
                   "stacked4": lambda c: fast.evaluate_many([(c[0] * s, c[1] * s) for s in (1.0, 0.9, 0.8, 0.7)])}
        order = list(methods)
        for rep in range(reps + 1):  # the first repetition warms up and is dropped
            order = order[1:] + order[:1]
            for method in order:
                c = coords[rep % len(coords)]
                start = time.perf_counter()
                methods[method](c)
                took = (time.perf_counter() - start) / (4 if method == "stacked4" else 1)
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
                paper_s=med["paper"], stacked4_per_point_s=med["stacked4"],
                stacked4_over_plain=statistics.median([v / p for v, p in zip(times["stacked4"], times["plain"])]),
                vitlens_over_plain=statistics.median(
                    [v / p for v, p in zip(times["vitlens"], times["plain"])]),
                vitlens_over_paper=statistics.median([v / p for v, p in zip(times["vitlens"], times["paper"])]))


def statistical(name: str, samples_n: int | None, batch_size: int, grid: int, tolerance: float, rtol: float,
                z: float, min_samples: int, min_batches: int, anchors: int, split: str = "train") -> dict:
    """Every point of a GRID x GRID surface, full and statistical, timed back to back (alternating
    which goes first), the statistical anchors included; compared point by point."""
    model, weights = _model(name)
    data = load_data("digits", split, samples=samples_n, seed=0, model=model)
    samples = prepare_samples(data, batch_size, seed=0, shuffle=True)
    directions = random_directions(model, 2, seed=0)
    xs = [float(v) for v in grid_axis(grid, -1, 1)]
    centre = xs.index(0.0) if 0.0 in xs else None
    axis = anchor_indices(grid, anchors, centre)
    anchor_points = [(i, j) for j in axis for i in axis]
    others = [(i, j) for j in range(grid) for i in range(grid) if (i, j) not in anchor_points]
    full_t, stat_t, out = [], [], []
    with eval_mode(model):
        full = PointEvaluator(model, samples, directions, weight_decay=5e-2)
        stat = PointEvaluator(model, samples, directions, weight_decay=5e-2, tolerance=tolerance, rtol=rtol,
                              z=z, min_samples=min_samples, min_batches=min_batches)
        for k, (i, j) in enumerate(anchor_points + others):  # anchors first: the others need them
            coords = (xs[i], xs[j])
            stat_run = stat.add_anchor if k < len(anchor_points) else stat.evaluate
            runs = [("full", full.evaluate), ("stat", stat_run)]
            rows = {}
            for label, run in (runs if k % 2 == 0 else runs[::-1]):
                start = time.perf_counter()
                rows[label] = run(coords)
                (full_t if label == "full" else stat_t).append(time.perf_counter() - start)
            out.append((k < len(anchor_points), rows["full"], rows["stat"]))
        full.restore()
    within = within_se = 0
    worst, anchors_exact = 0.0, True
    for anchor, f, s in out:
        if not f["finite"]:  # both must say so (no bound to check)
            within += not s["finite"]
            within_se += not s["finite"]
            continue
        bound = max(tolerance, rtol * abs(f["loss"]))
        error = abs(s["loss"] - f["loss"])
        within += error <= bound
        within_se += error <= z * s["stderr"] + 1e-12 * abs(f["loss"])
        worst = max(worst, error / bound)
        anchors_exact &= not anchor or (s["loss"] == f["loss"] and s["samples"] == samples.count)
    evaluated = sum(s["samples"] for _, _, s in out)
    return dict(model=f"{name} ({weights})", grid=f"{grid}x{grid}", split=split, samples=samples.count,
                batch=batch_size, tolerance=tolerance, rtol=rtol, z=z, min_samples=min_samples,
                anchors=len(anchor_points), points=len(out), within=within, within_z_se=within_se,
                worst_error_over_bound=worst, anchors_exact=anchors_exact,
                sample_fraction=evaluated / (samples.count * len(out)),
                cost_ratio=sum(stat_t) / sum(full_t), full_s=sum(full_t), stat_s=sum(stat_t))


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
    parser.add_argument("--skip-per-point", action="store_true")
    parser.add_argument("--skip-statistical", action="store_true")
    parser.add_argument("--stat-models", default="demo_resnet,demo_vit")
    parser.add_argument("--stat-samples", type=int, default=None, help="default: the whole split")
    parser.add_argument("--stat-batch-size", type=int, default=64)
    parser.add_argument("--stat-grid", type=int, default=21)
    parser.add_argument("--tolerance", type=float, default=0.2)
    parser.add_argument("--rtol", type=float, default=0.1)
    parser.add_argument("--z", type=float, default=3.0)
    parser.add_argument("--min-samples", type=int, default=128)
    parser.add_argument("--min-batches", type=int, default=2)
    parser.add_argument("--anchors", type=int, default=5, help="anchor points per axis")
    parser.add_argument("--stat-split", default="train", choices=["train", "test"])
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, CPU\n")
    if not args.skip_per_point:
        rows = [per_point(name, args.samples, args.batch_size, args.reps) for name in args.models.split(",")]
        print("Time per grid point (medians; ratios are medians of per-repetition ratios)\n")
        print(table(rows, ["model", "params", "samples", "reps", "plain_s", "vitlens_s", "paper_s",
                           "vitlens_over_plain", "vitlens_over_paper", "stacked4_per_point_s",
                           "stacked4_over_plain"]))
        sys.stdout.flush()
    if not args.skip_statistical:
        rows = []
        for name in args.stat_models.split(","):
            rows.append(statistical(name, args.stat_samples, args.stat_batch_size, args.stat_grid, args.tolerance,
                                    args.rtol, args.z, args.min_samples, args.min_batches, args.anchors,
                                    args.stat_split))
            print(table(rows[-1:], list(rows[-1])), file=sys.stderr, flush=True)  # progress
        print("\nStatistical mode vs full evaluation at every point (within: |stat - full| <= "
              "max(tolerance, rtol * |loss|); within_z_se: <= z * stderr)\n")
        print(table(rows, list(rows[0])))
    return 0


if __name__ == "__main__":
    sys.exit(main())
