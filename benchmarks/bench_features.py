"""Feature-pass and lesion speed: ratios against anchors measured in the same run, interleaved, medians.

    python benchmarks/bench_features.py                                  # defaults below, markdown on stdout
    python benchmarks/bench_features.py --samples 128 --repeats 5 --lesion-samples 32

Part 1, one `collect` pass with the Fourier and variance reducers together (what the dashboard's
feature pages cost) against the anchor "plain": ``model(x)`` on the same batches (no_grad, eval).
Both see the same list of prepared (x, y) batches, so data loading is outside both. Target <= 1.5x.

Part 2, lesion of every skippable block: `lesion_scores(..., reuse_prefix=True)` (vitlens) against
the naive anchor `lesion_scores(..., reuse_prefix=False)` (one full evaluation per lesioned block, plus
the intact one). Target <= 0.6x on the 12-layer ViT (vit_ti_cifar); resnet18_cifar is reported with
the "ideal" ratio expected from its measured per-block costs (prefix reuse saves less when the late
blocks are the expensive ones).

Method: every repetition times the anchor and vitlens back to back, alternating which goes first; the
ratio column is the median of the per-repetition ratios (paired, so slow phases of a loaded machine
cancel), the time columns are medians of the times. Two clocks are recorded: CPU time of this process
(`time.process_time`, with ``torch.set_num_threads(1)`` by default so it is a work measure immune to
other processes) and wall time; `--clock` picks the one printed first. For the tiny demo models one
feature pass takes milliseconds, so each timing of part 1 repeats the pass back to back until the anchor
takes >= 0.3 s CPU (same count for both; times are reported per pass). Models without shipped weights
(vit_ti_cifar, resnet18_cifar) are randomly initialised, which does not change their cost.

Exit status 1 when a measurement with a target misses it.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from vitlens.analyses.fourier import FourierReducer  # noqa: E402
from vitlens.analyses.lesion import lesion_scores  # noqa: E402
from vitlens.analyses.variance import VarianceReducer  # noqa: E402
from vitlens.data import load_data  # noqa: E402
from vitlens.features import collect, resolve_blocks  # noqa: E402
from vitlens.models import load_model  # noqa: E402

FEATURE_MODELS = ["demo_vit", "vit_ti_cifar", "resnet18_cifar", "demo_alternet"]
LESION_MODELS = ["vit_ti_cifar", "resnet18_cifar"]
FEATURE_TARGET = 1.5
LESION_TARGET = {"vit_ti_cifar": 0.6}


def get_model(name: str):
    try:
        model, weights = load_model(name, pretrained=True), "trained"
    except Exception:
        model, weights = load_model(name), "random init"
    return model.eval(), weights


def prepare_batches(model, samples: int, batch_size: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The digits test subset as a list of ready (x, y) batches."""
    dataset = load_data("digits", split="test", samples=samples, model=model)
    xs = torch.stack([dataset[i][0] for i in range(len(dataset))])
    ys = torch.as_tensor([int(dataset[i][1]) for i in range(len(dataset))])
    return [(xs[i:i + batch_size], ys[i:i + batch_size]) for i in range(0, len(xs), batch_size)]


def timed(fn) -> tuple[float, float]:
    """(CPU seconds of this process, wall seconds) of one call."""
    c0, w0 = time.process_time(), time.perf_counter()
    fn()
    return time.process_time() - c0, time.perf_counter() - w0


def calibrate(fn, min_seconds: float) -> int:
    """How many back-to-back calls of FN take at least MIN_SECONDS of CPU (tiny models time badly)."""
    once = max(timed(fn)[0], 1e-4)
    return max(1, int(min_seconds / once + 0.999))


def looped(fn, n: int):
    def run():
        for _ in range(n):
            fn()
    return run


def interleaved(anchor, candidate, repeats: int, min_seconds: float = 0.0) -> dict:
    """Time ANCHOR and CANDIDATE REPEATS times each, alternating the order. With MIN_SECONDS, each
    timing runs both the same number of times in a row (chosen so the anchor takes that long); the
    reported times are per call."""
    anchor(), candidate()  # warm-up (allocator, lazy init), untimed
    inner = calibrate(anchor, min_seconds) if min_seconds else 1
    anchor, candidate = looped(anchor, inner), looped(candidate, inner)
    times = {"anchor": [], "vitlens": []}
    for rep in range(repeats):
        pair = [("anchor", anchor), ("vitlens", candidate)]
        for label, fn in (pair if rep % 2 == 0 else pair[::-1]):
            times[label].append(timed(fn))
    out = {}
    for k, clock in enumerate(("cpu", "wall")):
        a = [t[k] for t in times["anchor"]]
        v = [t[k] for t in times["vitlens"]]
        out[clock] = dict(anchor=statistics.median(a) / inner, vitlens=statistics.median(v) / inner, inner=inner,
                          ratio=statistics.median(y / x for x, y in zip(a, v)),
                          ratios=[y / x for x, y in zip(a, v)])
    return out


# ----------------------------------------------------------------------------- part 1


def bench_feature_pass(name: str, samples: int, batch_size: int, repeats: int) -> dict:
    model, weights = get_model(name)
    batches = prepare_batches(model, samples, batch_size)

    @torch.no_grad()
    def plain():
        for x, _ in batches:
            model(x)

    def vitlens():
        collect(model, batches, [FourierReducer(), VarianceReducer()])

    res = interleaved(plain, vitlens, repeats, min_seconds=0.3)
    return dict(model=f"{name} ({weights})", measurement=f"Fourier+variance collect vs model(x), N={samples}",
                target=f"<= {FEATURE_TARGET}", limit=FEATURE_TARGET, **res)


# ----------------------------------------------------------------------------- part 2


@torch.no_grad()
def per_block_cpu(block_list, batches, passes: int = 2) -> list[float]:
    """Median CPU seconds of each block over PASSES full passes (for the ideal lesion ratio)."""
    costs = [[] for _ in block_list]
    for _ in range(passes):
        for x, _ in batches:
            state = x
            for i, block in enumerate(block_list):
                c0 = time.process_time()
                state = block(state)
                costs[i].append(time.process_time() - c0)
    return [statistics.median(c) * len(batches) for c in costs]


def ideal_lesion_ratio(costs: list[float], targets: list[int]) -> float:
    """Prefix reuse / naive with the given block costs (shortcuts counted as free)."""
    full = sum(costs)
    reuse = full + sum(sum(costs[i + 1:]) for i in targets)
    return reuse / (full * (len(targets) + 1))


def bench_lesion(name: str, samples: int, batch_size: int, repeats: int) -> dict:
    model, weights = get_model(name)
    batches = prepare_batches(model, samples, batch_size)
    block_list = resolve_blocks(model, batches[0][0][:2])
    targets = [i for i, b in enumerate(block_list) if b.skippable]

    last = {}

    def run(reuse: bool):
        last[reuse] = lesion_scores(block_list, batches, reuse_prefix=reuse)

    res = interleaved(lambda: run(False), lambda: run(True), repeats)
    # sanity: both paths give the same scores
    (intact_a, les_a), (intact_b, les_b) = last[False], last[True]
    same = abs(intact_a.nll - intact_b.nll) < 1e-5 and all(
        abs(les_a[i].nll - les_b[i].nll) < 1e-4 * max(1.0, abs(les_a[i].nll)) for i in targets)
    ideal = ideal_lesion_ratio(per_block_cpu(block_list, batches), targets)
    limit = LESION_TARGET.get(name)
    target = f"<= {limit}" if limit else f"report (ideal {ideal:.2f})"
    return dict(model=f"{name} ({weights})",
                measurement=f"lesion {len(targets)} blocks, prefix reuse vs naive, N={samples}",
                target=target + (f"; ideal {ideal:.2f}" if limit else "") + ("" if same else "; SCORES DIFFER"),
                limit=limit, ideal=ideal, same=same, **res)


# ----------------------------------------------------------------------------- output


def table(rows: list[dict], clock: str) -> str:
    unit = "CPU s" if clock == "cpu" else "wall s"
    lines = [f"| model | measurement | anchor median ({unit}) | vitlens median ({unit}) | ratio (median) "
             "| target | ok |",
             "|---|---|---:|---:|---:|---|---|"]
    for r in rows:
        m = r[clock]
        ok = "" if r["limit"] is None else ("yes" if m["ratio"] <= r["limit"] else "NO")
        lines.append(f"| {r['model']} | {r['measurement']} | {m['anchor']:.3f} | {m['vitlens']:.3f} | "
                     f"{m['ratio']:.3f} | {r['target']} | {ok} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--samples", type=int, default=128, help="samples for the feature pass (default 128)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--repeats", type=int, default=5, help="timed repetitions per measurement (default 5)")
    p.add_argument("--lesion-samples", type=int, default=16,
                   help="samples for the lesion part (default 16: naive lesion of ViT-Ti is 25 full passes)")
    p.add_argument("--lesion-repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1: CPU time = work)")
    p.add_argument("--clock", choices=["cpu", "wall"], default="cpu", help="which clock's table comes first")
    p.add_argument("--models", nargs="*", default=FEATURE_MODELS)
    p.add_argument("--lesion-models", nargs="*", default=LESION_MODELS)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    rows = []
    for name in args.models:
        rows.append(bench_feature_pass(name, args.samples, args.batch_size, args.repeats))
        print(f"# done: features {name} cpu ratios {[round(x, 3) for x in rows[-1]['cpu']['ratios']]}",
              file=sys.stderr, flush=True)
    for name in args.lesion_models:
        rows.append(bench_lesion(name, args.lesion_samples, min(args.batch_size, args.lesion_samples),
                                 args.lesion_repeats))
        print(f"# done: lesion {name} cpu ratios {[round(x, 3) for x in rows[-1]['cpu']['ratios']]}",
              file=sys.stderr, flush=True)

    other = "wall" if args.clock == "cpu" else "cpu"
    print(f"torch {torch.__version__}, {args.threads} thread(s); feature pass: digits test, N={args.samples}, "
          f"batch {args.batch_size}, {args.repeats} repeats; lesion: N={args.lesion_samples}, "
          f"{args.lesion_repeats} repeats. Anchor and vitlens interleaved; ratio = median of per-repetition ratios.\n")
    for clock in (args.clock, other):
        print(f"### {'CPU time of this process' if clock == 'cpu' else 'wall time'}\n")
        print(table(rows, clock))
        print()
    failed = [r for r in rows if r["limit"] is not None and r[args.clock]["ratio"] > r["limit"]]
    return 1 if failed or not all(r.get("same", True) for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
