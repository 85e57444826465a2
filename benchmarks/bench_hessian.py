"""Hessian benchmark: vitlens (Lanczos, Hutchinson/Hutch++, HVP engines) vs PyHessian 0.1.

Not a test: run by hand, prints markdown tables of medians and ratios.

    python benchmarks/bench_hessian.py                                  # full: resnet18_cifar + vit_ti_cifar
    python benchmarks/bench_hessian.py --models demo_resnet demo_vit --minibatches 8 --reps 1   # quick

Per model, on one batch of 64 (digits, resized to the model's input):
  * hvp:      seconds of one gradient (forward + backward) and of one HVP per engine; HVP / gradient.
  * top5:     vitlens Lanczos (default tol 1e-2, residual stop; and gap-aware) vs PyHessian `eigenvalues(top_n=5)` with its
              defaults: time, HVPs, max relative error of the five against a tight Lanczos reference (--ref-tol,
              default 1e-7); the gap-aware stop and the residual stop (the default) side by side.
  * trace:    standard error of Hutch++ and the Krylov-deflated estimator with --probes HVPs each, against
              Hutchinson with twice as many; "Hutchinson HVPs for this stderr" = (Hutchinson's per-probe
              standard deviation / stderr)^2 (stderr shrinks as 1/sqrt(probes)); PyHessian `trace()` defaults.
  * spectrum: top-5 of each of --minibatches minibatches of 16: vitlens vs a PyHessian loop.
Timings on a shared machine are noisy: --reps repeats each timed call and reports the median.
--device cuda runs everything on the GPU (timings synchronise the device); benchmarks/gpu_check.py
reuses these helpers.
"""
from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import vitlens  # noqa: E402
from vitlens.hessian.pyhessian_engine import pyhessian_trace  # noqa: E402
from vitlens.hessian.trace import mean_stderr  # noqa: E402
from vitlens.data import load_data  # noqa: E402
from vitlens.hessian import (cross_entropy, hessian_mode, hessian_operator, hutchinson, hutchpp,  # noqa: E402
                             krylov_deflated, TraceEstimate,
                             max_eigenvalue_spectrum, top_eigenvalues)


def batch_of(model, n: int, offset: int = 0):
    """N digits images (resized to MODEL's input) and labels, on MODEL's device."""
    ds = load_data("digits", split="train", model=model, samples=None, seed=0)
    idx = [(offset + i) % len(ds) for i in range(n)]
    device = next(model.parameters()).device
    return torch.stack([ds[i][0] for i in idx]).to(device), torch.tensor([int(ds[i][1]) for i in idx]).to(device)


def synchronize():
    """Wait for queued CUDA work (no-op on CPU), so wall-clock timings cover the work."""
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()


CLOCK = time.perf_counter  # --clock cpu: time.process_time (this process's CPU time; 1 thread = work done)


def median_time(fn, reps: int):
    """(median seconds over REPS calls of FN, its last result); CUDA work is waited for."""
    times, out = [], None
    for _ in range(reps):
        synchronize()
        start = CLOCK()
        out = fn()
        synchronize()
        times.append(CLOCK() - start)
    return statistics.median(times), out


class CountingPyHessian:
    """PyHessian with its HVPs counted (patches its module-level hessian_vector_product while active)."""

    def __init__(self):
        import pyhessian.hessian  # noqa: F401  (the package re-exports the class under the same name)
        self.module, self.count = sys.modules["pyhessian.hessian"], 0

    def __enter__(self):
        self.original = self.module.hessian_vector_product

        def counted(*args, **kw):
            self.count += 1
            return self.original(*args, **kw)
        self.module.hessian_vector_product = counted
        return self

    def __exit__(self, *exc):
        self.module.hessian_vector_product = self.original


def pyhessian_top5(model, batch, seed=0, top_n=5, max_iter=100, tol=1e-3):
    """PyHessian `eigenvalues(top_n=TOP_N)` (its defaults maxIter=100, tol=1e-3): (eigenvalues, HVPs), on the
    model's device."""
    from pyhessian import hessian
    cuda = next(model.parameters()).is_cuda
    with hessian_mode(model), CountingPyHessian() as counter:
        torch.manual_seed(seed)
        h = hessian(model, cross_entropy, data=batch, cuda=cuda)
        values, _ = h.eigenvalues(maxIter=max_iter, tol=tol, top_n=top_n)
    for p in model.parameters():
        p.grad = None
    return values, counter.count


def max_rel_error(values, reference):
    """Match by rank (largest magnitude first)."""
    a = sorted(values, key=abs, reverse=True)
    b = sorted(reference, key=abs, reverse=True)
    return max(abs(x - y) / abs(y) for x, y in zip(a, b))


def bench_model(name: str, args) -> list[str]:
    torch.manual_seed(0)
    model = vitlens.load_model(name, pretrained=name.startswith("demo_"))
    if args.checkpoint:
        vitlens.load_checkpoint(model, args.checkpoint)
    model = model.to(args.device)
    batch = batch_of(model, args.batch)
    nparams = sum(p.numel() for p in model.parameters())
    print(f"\n### {name} ({nparams / 1e6:.2f}M params, batch {args.batch}"
          f"{', weights ' + args.checkpoint if args.checkpoint else ''})\n", flush=True)
    lines = []
    for part in args.parts:
        out = PARTS[part](model, batch, args)
        print("\n".join(out) + "\n", flush=True)
        lines += out
    return lines


def part_hvp(model, batch, args) -> list[str]:
    """HVP cost as a multiple of one gradient, per engine."""
    lines = []
    params = list(model.parameters())
    with hessian_mode(model):
        grad_s, _ = median_time(lambda: torch.autograd.grad(cross_entropy(model(batch[0]), batch[1]), params),
                                args.reps + 1)
    rows = [("gradient", grad_s)]
    for engine in ("double_backward", "recompute", "forward_over_reverse"):
        try:
            with hessian_operator(model, batch, engine=engine) as op:
                v = torch.randn(op.dim, generator=torch.Generator().manual_seed(0)).to(op.device)
                build_s, _ = median_time(lambda: op.matvec(v), 1)  # double_backward: builds the graph
                hvp_s, _ = median_time(lambda: op.matvec(v), args.reps + 1)
            rows.append((engine, hvp_s))
            if engine == "double_backward":
                rows.append(("double_backward first call (graph build)", build_s))
        except Exception as err:  # an engine that does not support the model
            print(f"{engine}: failed ({type(err).__name__}: {str(err)[:80]})")
    lines.append("| HVP engine | seconds | x gradient |\n|---|---|---|")
    lines += [f"| {k} | {s:.3f} | {s / grad_s:.2f} |" for k, s in rows]
    return lines


def part_top5(model, batch, args) -> list[str]:
    """vitlens Lanczos at its default tolerance vs PyHessian eigenvalues(top_n=5) at its defaults."""
    lines = []
    ref, rows = top5_rows(model, batch, args.reps, args.ref_tol)
    lines.append("\n| top-5 | seconds | HVPs | max rel. error vs reference | eigenvalues |\n|---|---|---|---|---|")
    lines.append(f"| reference Lanczos tol {args.ref_tol:g} | {ref.seconds:.1f} | {ref.hvps} | 0 | "
                 f"{', '.join(f'{v:.4g}' for v in ref.eigenvalues)} |")
    for row in rows:
        lines.append(f"| {row['label']} | {row['seconds']:.1f} | {row['hvps']} | {row['error']:.2e} | "
                     f"{', '.join(f'{v:.4g}' for v in row['eigenvalues'])} |")
    ours, plain, theirs = rows
    lines.append(f"\ntop-5 speed-up vs PyHessian: **{theirs['seconds'] / ours['seconds']:.1f}x** "
                 f"(residual-only stop: {theirs['seconds'] / plain['seconds']:.1f}x)")
    return lines


def top5_rows(model, batch, reps: int, ref_tol: float = 1e-7, ref_steps: int = 300):
    """(tight reference TopK, rows): vitlens gap-aware stop, vitlens residual-only stop, PyHessian; each
    row has label, seconds (median of REPS), hvps, error (max relative vs the reference), eigenvalues."""
    ref_s, ref = median_time(lambda: top_eigenvalues(model, batch, k=5, tol=ref_tol, max_steps=ref_steps, seed=1), 1)
    ref.seconds = ref_s  # on the benchmark's clock
    rows = []
    for label, bound in (("vitlens Lanczos (default tol, gap bound)", "gap"),
                         ("vitlens Lanczos (default tol, residual bound)", "residual")):
        seconds, top = median_time(lambda: top_eigenvalues(model, batch, k=5, seed=0, bound=bound), reps)
        rows.append(dict(label=label, seconds=seconds, hvps=top.hvps, eigenvalues=top.eigenvalues,
                         error=max_rel_error(top.eigenvalues, ref.eigenvalues)))
    seconds, (values, hvps) = median_time(lambda: pyhessian_top5(model, batch), reps)
    rows.append(dict(label="PyHessian eigenvalues(top_n=5)", seconds=seconds, hvps=hvps, eigenvalues=list(values),
                     error=max_rel_error(values, ref.eigenvalues)))
    return ref, rows


def part_trace(model, batch, args) -> list[str]:
    """Standard error at a fixed budget of HVPs; Hutchinson gets twice the budget."""
    lines = []
    budget = args.probes
    with hessian_operator(model, batch) as op:
        kw = dict(dtype=op.dtype, device=op.device)
        base = hutchinson(op.matvec, op.dim, max_probes=2 * budget, generator=torch.Generator().manual_seed(0), **kw)
        per_probe = base.stderr * math.sqrt(base.hvps)  # Hutchinson's standard deviation per probe
        first = base.samples[:budget]  # the same run's first half
        half = TraceEstimate("hutchinson", *mean_stderr(first), budget, first)
        estimates = [
            (f"Hutch++ (sketch {budget // 3})", hutchpp(op.matvec, op.dim, max_probes=budget, sketch=budget // 3,
                                                     matmat=op.matmat, generator=torch.Generator().manual_seed(1), **kw)),
            (f"Krylov-deflated (sketch {budget // 2})", krylov_deflated(
                op.matvec, op.dim, max_probes=budget, sketch=budget // 2, generator=torch.Generator().manual_seed(1),
                **kw))]
    ph = pyhessian_trace(model, batch)  # its trace(): Hutchinson, maxIter 100, tol 1e-3 (its defaults)
    lines.append("\n| trace | estimate | stderr | HVPs | Hutchinson HVPs for this stderr | HVP ratio |"
                 "\n|---|---|---|---|---|---|")
    for label, est in [(f"Hutchinson ({2 * budget} probes)", base), (f"Hutchinson ({budget} probes)", half)] + estimates:
        needed = (per_probe / est.stderr) ** 2 if est.stderr > 0 else math.inf
        lines.append(f"| {label} | {est.estimate:.5g} | {est.stderr:.4g} | {est.hvps} | {needed:.0f} | "
                     f"{needed / est.hvps:.2f}x |")
    lines.append(f"| PyHessian trace() defaults | {ph.estimate:.5g} | {ph.stderr:.4g} | {ph.hvps} | | |")
    krylov = estimates[1][1]
    lines.append(f"\ntrace: Krylov-deflated stderr in {krylov.hvps} HVPs {krylov.stderr:.4g} vs Hutchinson in "
                 f"{base.hvps} HVPs {base.stderr:.4g}; HVPs Hutchinson needs for the same stderr: "
                 f"**{(per_probe / krylov.stderr) ** 2 / krylov.hvps:.1f}x**")
    return lines


def part_spectrum(model, batch, args) -> list[str]:
    """Top-5 of each of --minibatches minibatches of 16: vitlens vs a PyHessian loop."""
    lines = []
    minibatches = [batch_of(model, 16, offset=16 * i) for i in range(args.minibatches)]
    ours_s, spectrum = median_time(lambda: max_eigenvalue_spectrum(model, minibatches, k=5), 1)

    def pyhessian_loop():
        return [pyhessian_top5(model, mb, seed=i)[0] for i, mb in enumerate(minibatches)]
    theirs_s, _ = median_time(pyhessian_loop, 1)
    s = spectrum.summary()
    lines.append(f"\n| spectrum ({args.minibatches} x 16, top-5) | seconds | HVPs | NEP | APE |\n|---|---|---|---|---|")
    lines.append(f"| vitlens | {ours_s:.1f} | {spectrum.hvps} | {s['nep']:.3f} | {s['ape']:.4g} |")
    lines.append(f"| PyHessian loop | {theirs_s:.1f} | | | |")
    lines.append(f"\nspectrum speed-up vs PyHessian loop: **{theirs_s / ours_s:.1f}x**")
    return lines


PARTS = {"hvp": part_hvp, "top5": part_top5, "trace": part_trace, "spectrum": part_spectrum}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["resnet18_cifar", "vit_ti_cifar"])
    parser.add_argument("--checkpoint", default=None, help="weights for the (single) model")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--reps", type=int, default=1, help="repetitions of each timed call (median)")
    parser.add_argument("--probes", type=int, default=40, help="trace budget in HVPs (Hutchinson gets twice)")
    parser.add_argument("--minibatches", type=int, default=32)
    parser.add_argument("--ref-tol", type=float, default=1e-7, help="Lanczos tolerance of the reference top-5")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--parts", nargs="+", choices=list(PARTS), default=list(PARTS))
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--clock", choices=["wall", "cpu"], default="wall",
                        help="wall time, or this process's CPU time (with --threads 1 immune to other "
                             "processes on a shared machine; CPU device only)")
    args = parser.parse_args(argv)
    global CLOCK
    CLOCK = time.process_time if args.clock == "cpu" else time.perf_counter
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, device {args.device}, {args.clock} clock")
    for name in args.models:
        bench_model(name, args)


if __name__ == "__main__":
    main()
