"""One prepared GPU check: every figure a GPU session should bring back, in one run, as a markdown report.

    bash benchmarks/gpu_check.sh                          # on the GPU machine (sets up, then calls this)
    python benchmarks/gpu_check.py --device cuda          # the same without the set-up
    python benchmarks/gpu_check.py --quick --device cpu   # CPU smoke run (tests/test_gpu_check.py), < 1 min

Report: $OUT/report.md (default ./artifacts/gpu_check), rewritten after every section, so a run cut
short still leaves what it measured. Sections, each under its own time cap and try (a failure or a
time-out is written into the report and the run goes on):

  * environment: device, torch / CUDA / cuDNN versions, set-up seconds (from gpu_check.sh);
  * tests: the GPU-relevant tests with VITLENS_TEST_DEVICE=cuda (pytest in a subprocess, capped);
  * per model (full: vit_ti_cifar and resnet50_cifar, random init, 32x32 inputs, 100 classes;
    --quick: demo_vit and demo_resnet):
      - hvp: one gradient (timm's attention as shipped; and inside the Hessian's math attention),
        one HVP per engine, and whether a double backward runs through timm's fused attention;
      - top-5 on one batch (64): vitlens Lanczos (residual stop, the default; gap-aware stop) vs PyHessian
        `eigenvalues(top_n=5)` on the same device, errors against a tight Lanczos reference;
      - spectrum: `max_eigenvalue_spectrum` on minibatches of 16 with together = 1, 4, 16
        (seconds per minibatch, GPU peak memory), `auto_together`'s choice, PyHessian per minibatch;
  * projection: the paper's spectrum (10% of CIFAR-100's train set: 313 minibatches of 16, top-5)
    from the measured seconds per minibatch;
  * landscape: one grid point (`PointEvaluator.evaluate`) vs one plain evaluation pass,
    several points per pass (`PointEvaluator.evaluate_many`) and the size `points_per_pass=0` would choose;
  * features: one Fourier + variance `collect` pass vs a forward pass.

Every timing is the median of --reps calls (fewer when a section's time runs short; the count is
given), with CUDA synchronised around each; ratios are against an anchor measured in the same run.
Inputs are random (N(0, 1) images, uniform labels): the costs do not depend on the data.
"""
from __future__ import annotations

import argparse
import contextlib
import gc
import math
import os
import platform
import re
import signal
import statistics
import subprocess
import sys
import time
import traceback
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import vitlens  # noqa: E402
from bench_hessian import max_rel_error, median_time, pyhessian_top5, synchronize  # noqa: E402
from vitlens.hessian import (cross_entropy, hessian_mode, hessian_operator, max_eigenvalue_spectrum,  # noqa: E402
                             top_eigenvalues)

PAPER_MINIBATCHES = 313  # 10% of CIFAR-100's 50,000 training images in minibatches of 16 (Park & Kim 2022)

# the GPU-relevant tests (VITLENS_TEST_DEVICE=cuda); each entry runs as one capped pytest call
HESSIAN_TESTS = ("topk_matches or engines_agree or default_lanczos or vit_hvp or demo_vit_hvp or "
                 "spectrum_per_minibatch or stacked or gap_bound_on or auto_together")
TEST_GROUPS = [("HVP engines, Lanczos, spectrum --together, timm attention", ["tests/test_hessian.py", "-k",
                                                                            HESSIAN_TESTS]),
               ("landscape, features, job worker", ["tests/test_landscape*.py", "tests/test_features*.py",
                                                    "tests/test_jobs.py", "tests/test_queue.py"])]


def test_targets(targets: list[str]) -> list[str]:
    """TARGETS with file globs expanded to the files that exist (pytest options kept as they are)."""
    out = []
    for t in targets:
        if t.startswith("tests/"):
            out += sorted(str(p.relative_to(ROOT)) for p in ROOT.glob(t))
        else:
            out.append(t)
    return out

FULL = dict(models=["vit_ti_cifar", "resnet50_cifar"], model_kwargs=dict(num_classes=100), size=32, classes=100,
            batch=64, minibatch=16, together=[1, 4, 16], spectrum_minibatches=8, k=5, pyhessian_iter=100,
            reps=3, budget=420.0, ref_tol=1e-6,
            ref_steps=100, landscape_samples=1024, landscape_batch=256, points=[1, 4, 16], feature_samples=1024,
            feature_batch=256, caps=dict(env=15, tests=60, hvp=15, top5=45, spectrum=75, landscape=25,
                                         features=10))
# (caps from the first H200 run, 2026-12-04: one together-row of 16 minibatches took 23-35 s, so 64 never ran;
# the landscape section needed more than 15 s to reach the points_per_pass choice)
QUICK = dict(models=["demo_vit", "demo_resnet"], model_kwargs=dict(), size=32, classes=10, batch=4, minibatch=2,
             together=[1, 2], spectrum_minibatches=2, k=2, pyhessian_iter=10, reps=1, budget=120.0, ref_tol=1e-4,
             ref_steps=40, landscape_samples=32, landscape_batch=16, points=[1, 2], feature_samples=16,
             feature_batch=8, caps=dict(env=20, tests=60, hvp=15, top5=20, spectrum=20, landscape=10, features=10))


# ----------------------------------------------------------------------------- report and guards


class SectionTimeout(BaseException):
    """A section's time is up (a BaseException, so that `except Exception` inside a section lets it
    through; where torch converts it into a RuntimeError, the timer fires again every half second)."""


class Report:
    def __init__(self, path: Path, title: str):
        self.path, self.title = path, title
        self.parts: list[str] = []
        self.statuses: list[tuple[str, str, float]] = []
        self.path.parent.mkdir(parents=True, exist_ok=True)

    def write(self) -> None:
        status = ["## Sections", "", "| section | status | seconds |", "|---|---|---|"]
        status += [f"| {name} | {state} | {seconds:.1f} |" for name, state, seconds in self.statuses]
        text = "\n".join([f"# {self.title}", ""] + self.parts + [""] + status) + "\n"
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(text)
        tmp.replace(self.path)


def _alarm(signum, frame):
    raise SectionTimeout()


def check_timeout(err: Exception) -> None:
    """Re-raise a section time-out that torch wrapped into ERR (for `except Exception` blocks)."""
    if "SectionTimeout" in str(err):
        raise SectionTimeout() from err


@contextlib.contextmanager
def section(report: Report, title: str, cap: float, deadline: float):
    """A report section: its lines (yielded list), under min(CAP, time left) seconds; any failure or
    time-out is recorded (with what was measured before it) and swallowed."""
    lines: list[str] = []
    budget = max(1.0, min(cap, deadline - time.perf_counter()))
    start, state = time.perf_counter(), "ok"
    old = signal.signal(signal.SIGALRM, _alarm)
    signal.setitimer(signal.ITIMER_REAL, budget, 0.5)
    try:
        yield lines
    except SectionTimeout:
        state = f"timed out after {budget:.0f} s (results up to then are above)"
    except Exception as err:  # one section's failure must not end the report
        if "SectionTimeout" in str(err):  # raised inside TorchScript / C++, which re-raises a RuntimeError
            state = f"timed out after {budget:.0f} s (results up to then are above)"
        else:
            state = f"failed: {type(err).__name__}: {' '.join(str(err).split())[:300]}"
            lines.append("```\n" + traceback.format_exc(limit=6)[-2000:] + "```")
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0, 0)
        signal.signal(signal.SIGALRM, old)
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    seconds = time.perf_counter() - start
    report.parts += [f"## {title}", ""] + lines + ["", f"_section: {state}, {seconds:.1f} s_", ""]
    report.statuses.append((title, state, seconds))
    report.write()


def reps_within(fn, reps: int, budget: float):
    """(median seconds, calls made, last result): up to REPS calls of FN, fewer when the next call
    would likely overrun BUDGET seconds (at least one call)."""
    times, out, start = [], None, time.perf_counter()
    while len(times) < reps:
        seconds, out = median_time(fn, 1)
        times.append(seconds)
        if time.perf_counter() - start + max(times) > budget:
            break
    return statistics.median(times), len(times), out


def fmt(x: float, digits: int = 3) -> str:
    return "n/a" if x is None or not math.isfinite(x) else f"{x:.{digits}g}"


def peak_gib(device) -> float:
    return torch.cuda.max_memory_allocated(device) / 2 ** 30 if device.type == "cuda" else math.nan


def reset_peak(device) -> None:
    if device.type == "cuda":
        synchronize()
        torch.cuda.reset_peak_memory_stats(device)


# ----------------------------------------------------------------------------- data and models


def random_batch(n: int, size: int, classes: int, device, seed: int):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(n, 3, size, size, generator=g).to(device),
            torch.randint(0, classes, (n,), generator=g).to(device))


def build(name: str, cfg: dict, device):
    torch.manual_seed(0)
    if name.startswith("demo_"):
        model, weights = vitlens.load_model(name, pretrained=True), "shipped weights"
    else:
        model, weights = vitlens.load_model(name, **cfg["model_kwargs"]), "random init"
    model = model.to(device).eval()
    classes = int(getattr(model, "num_classes", None) or cfg["classes"])
    params = sum(p.numel() for p in model.parameters())
    return model, f"{name} ({params / 1e6:.2f}M params, {weights}, {classes} classes)", classes


# ----------------------------------------------------------------------------- sections


def tf32_cost(model, cfg: dict, device) -> str:
    """What measuring in float32 costs (vitlens.device.full_precision): a forward pass with cuDNN's
    default TF32 convolutions against one without, interleaved, medians."""
    x = torch.randn(cfg["feature_batch"], 3, cfg["size"], cfg["size"], device=device)
    conv = torch.backends.cudnn.conv
    times: dict = {"tf32": [], "ieee": []}
    with torch.no_grad():
        for _ in range(4):
            for mode in times:
                conv.fp32_precision = mode
                times[mode].append(median_time(lambda: model(x), 5)[0])
    conv.fp32_precision = "ieee"
    tf32, ieee = (statistics.median(times[m]) for m in ("tf32", "ieee"))
    return (f"forward pass of {len(x)}: {tf32 * 1e3:.2f} ms with TF32 convolutions, {ieee * 1e3:.2f} ms in float32 "
            f"(vitlens measures in float32: {ieee / tf32:.2f}x)")


def part_env(lines: list, device, args) -> None:
    lines += ["| item | value |", "|---|---|"]
    rows = [("mode", "quick (CPU smoke run)" if args.quick else "full (paper scale)"), ("device", str(device)),
            ("python", platform.python_version()), ("torch", torch.__version__),
            ("torch CUDA / cuDNN", f"{torch.version.cuda} / {torch.backends.cudnn.version()}"),
            ("CPU threads", str(torch.get_num_threads())),
            ("set-up seconds (gpu_check.sh)", args.setup_seconds or "n/a (not run by gpu_check.sh)"),
            ("set-up", args.setup_note or "n/a")]
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        rows += [("GPU", f"{props.name}, {props.total_memory / 2 ** 30:.0f} GiB, {props.multi_processor_count} SMs"),
                 ("float32 precision, matmul / cuDNN conv (anchors and vitlens alike)",
                  f"{torch.backends.cuda.matmul.fp32_precision} / {torch.backends.cudnn.conv.fp32_precision}")]
        a = torch.randn(4096, 4096, device=device)
        t, _ = median_time(lambda: a @ a, 5)
        rows.append(("fp32 4096^3 matmul", f"{t * 1e3:.2f} ms ({2 * 4096 ** 3 / t / 1e12:.1f} TFLOP/s)"))
    lines += [f"| {k} | {v} |" for k, v in rows]


def part_tests(lines: list, budget: float) -> None:
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)
    env = dict(os.environ, VITLENS_TEST_DEVICE="cuda", PYTHONPATH=path)
    lines += ["| tests | result | seconds |", "|---|---|---|"]
    failures = []
    start = time.perf_counter()
    for label, targets in TEST_GROUPS:
        targets = test_targets(targets)
        left = budget - (time.perf_counter() - start) - 2
        if left < 5:
            lines.append(f"| {label} | not run: no time left | |")
            continue
        t0 = time.perf_counter()
        cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--maxfail=20", *targets]
        try:
            proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=left)
            out = proc.stdout + proc.stderr
            summary = next((line.strip("= ") for line in reversed(out.splitlines())
                            if any(w in line for w in (" passed", " failed", " error", " skipped", "no tests"))),
                           f"exit {proc.returncode}")
            failures += [line for line in out.splitlines() if line.startswith(("FAILED", "ERROR"))]
        except subprocess.TimeoutExpired as err:
            partial = err.stdout.decode() if isinstance(err.stdout, bytes) else (err.stdout or "")
            marks = "".join(m.group(1) for m in re.finditer(r"^([.FEsxX]+)\s*(?:\[\s*\d+%\])?$", partial, re.M))
            summary = (f"capped after {left:.0f} s (not finished): so far {marks.count('.')} passed, "
                       f"{marks.count('F')} failed, {marks.count('E')} errors, {marks.count('s')} skipped")
        lines.append(f"| {label} (`{' '.join(targets)}`) | {summary} | {time.perf_counter() - t0:.1f} |")
    if failures:
        lines += ["", "Failures:", "```", *failures[:30], "```"]
    lines.append("\nOn VITLENS_TEST_DEVICE: tests/test_hessian.py (models and data), test_landscape_surface.py "
                 "(grid points, one and several per pass), test_features*.py (the analyses' Context); the job "
                 "and queue tests run analyses with device auto, which is the GPU when one is visible.")


def part_hvp(lines: list, model, cfg: dict, device, args) -> None:
    batch = random_batch(cfg["batch"], cfg["size"], cfg["classes_of_model"], device, seed=0)
    params = [p for p in model.parameters() if p.requires_grad]
    reps = args.reps + 1

    def gradient():
        return torch.autograd.grad(cross_entropy(model(batch[0]), batch[1]), params)

    grad_shipped, _ = median_time(gradient, reps)  # timm's attention as shipped (fused where timm enables it)
    with hessian_mode(model):
        grad_math, _ = median_time(gradient, reps)
    rows = [("gradient, attention as timm ships it", grad_shipped, None),
            ("gradient inside hessian_mode (math attention)", grad_math, None)]
    for engine in ("double_backward", "recompute", "forward_over_reverse"):
        try:
            with hessian_operator(model, batch, engine=engine) as op:
                v = torch.randn(op.dim, generator=torch.Generator().manual_seed(0)).to(device)
                first, _ = median_time(lambda: op.matvec(v), 1)
                seconds, _ = median_time(lambda: op.matvec(v), reps)
            rows.append((f"HVP {engine}", seconds, first))
        except Exception as err:
            check_timeout(err)
            rows.append((f"HVP {engine}: failed ({type(err).__name__}: {str(err)[:80]})", math.nan, None))
    lines += ["| one batch of %d | seconds | x gradient (math attention) | first call (graph build) |" % cfg["batch"],
              "|---|---|---|---|"]
    lines += [f"| {label} | {fmt(s, 4)} | {fmt(s / grad_math, 3)} | {fmt(first, 4) if first else ''} |"
              for label, s, first in rows]
    fused = [m for m in model.modules() if isinstance(getattr(m, "fused_attn", None), bool)]
    if fused:
        lines.append("\n" + fused_double_backward(model, batch, params, fused, grad_math, reps))


def fused_double_backward(model, batch, params, fused, grad_s, reps) -> str:
    """Does an HVP run through timm's fused attention (SDPA's default backends) on this device?"""
    saved = [m.fused_attn for m in fused]
    try:
        for m in fused:
            m.fused_attn = True
        vs = [torch.randn_like(p) for p in params]

        def hvp():
            grads = torch.autograd.grad(cross_entropy(model(batch[0]), batch[1]), params, create_graph=True)
            return torch.autograd.grad(grads, params, grad_outputs=vs)
        seconds, _ = median_time(hvp, reps)
        return (f"HVP (graph build + double backward) with timm's fused attention left on: runs, {seconds:.4f} s "
                f"= {seconds / grad_s:.2f}x the gradient (hessian_mode switches fused attention off)")
    except Exception as err:
        check_timeout(err)
        return (f"HVP with timm's fused attention left on: fails here ({type(err).__name__}: "
                f"{str(err).splitlines()[0][:160]}), so hessian_mode's math attention is needed")
    finally:
        for m, flag in zip(fused, saved):
            m.fused_attn = flag
        for p in params:
            p.grad = None


def part_top5(lines: list, model, cfg: dict, device, args, budget: float) -> None:
    k = cfg["k"]
    batch = random_batch(cfg["batch"], cfg["size"], cfg["classes_of_model"], device, seed=1)
    start = time.perf_counter()
    ref = top_eigenvalues(model, batch, k=k, tol=cfg["ref_tol"], max_steps=cfg["ref_steps"], seed=1)
    lines += [f"top-{k} on one batch of {cfg['batch']}; reference: Lanczos tol {cfg['ref_tol']:g}, "
              f"{ref.hvps} HVPs, {ref.seconds:.3f} s, converged {ref.converged}", "",
              f"| top-{k} | seconds (median) | reps | HVPs | max rel. error vs reference | x PyHessian time |",
              "|---|---|---|---|---|---|"]
    rows = []
    for label, bound in (("vitlens Lanczos, gap-aware stop", "gap"),
                         ("vitlens Lanczos, residual stop (default)", "residual")):
        left = budget - (time.perf_counter() - start)
        seconds, n, top = reps_within(lambda: top_eigenvalues(model, batch, k=k, seed=0, bound=bound), args.reps,
                                      left / 4)
        rows.append((label, seconds, n, top.hvps, max_rel_error(top.eigenvalues, ref.eigenvalues)))
    left = budget - (time.perf_counter() - start)
    seconds, n, (values, hvps) = reps_within(lambda: pyhessian_top5(model, batch, top_n=k,
                                                                    max_iter=cfg["pyhessian_iter"]),
                                             args.reps, left * 0.8)
    theirs = seconds
    label = "its defaults" if cfg["pyhessian_iter"] == 100 else f"maxIter={cfg['pyhessian_iter']}"
    rows.append((f"PyHessian eigenvalues(top_n={k}), {label}", seconds, n, hvps, max_rel_error(values,
                                                                                              ref.eigenvalues)))
    for label, s, n, h, err in rows:
        lines.append(f"| {label} | {fmt(s, 4)} | {n} | {h} | {err:.2e} | {fmt(s / theirs, 3)} |")
    lines.append(f"\ntop-{k} speed-up vs PyHessian: **{theirs / rows[1][1]:.1f}x** (residual stop, the default); "
                 f"{theirs / rows[0][1]:.1f}x (gap-aware stop)")


def part_spectrum(lines: list, model, cfg: dict, device, args, budget: float, record: dict) -> None:
    from vitlens.hessian import auto_together
    k, mb = cfg["k"], cfg["minibatch"]
    start = time.perf_counter()
    pool = max(max(cfg["together"]), cfg["spectrum_minibatches"])
    minibatches = [random_batch(mb, cfg["size"], cfg["classes_of_model"], device, seed=100 + i) for i in range(pool)]
    # warm-up (kernels, allocator, cuDNN choices) of both paths, untimed
    max_eigenvalue_spectrum(model, minibatches[:1], k=1, max_steps=2)
    max_eigenvalue_spectrum(model, minibatches[:2], k=1, max_steps=2, together=2)
    t0 = time.perf_counter()
    chosen = auto_together(model, minibatches[0], limit=PAPER_MINIBATCHES)
    probe_s = time.perf_counter() - t0
    lines += [f"top-{k} of each minibatch of {mb}; the minibatches are stacked `together` per product "
              f"(auto_together picks {chosen}, probe {probe_s:.2f} s)", "",
              "| together | minibatches | seconds | s / minibatch | HVPs / minibatch | x together=1 rate | "
              "GPU peak GiB |", "|---|---|---|---|---|---|---|"]
    rates = {}
    for together in cfg["together"]:
        count = max(together, cfg["spectrum_minibatches"])
        left = budget - (time.perf_counter() - start)
        if left < 3:
            lines.append(f"| {together} | not run: section time spent | | | | | |")
            continue
        reset_peak(device)
        try:
            seconds, spectrum = median_time(lambda: max_eigenvalue_spectrum(model, minibatches[:count], k=k,
                                                                            together=together), 1)
        except torch.cuda.OutOfMemoryError as err:
            lines.append(f"| {together} | {count} | out of GPU memory ({str(err).splitlines()[0][:90]}) | | | | |")
            torch.cuda.empty_cache()
            continue
        rates[together] = seconds / count
        base = rates.get(cfg["together"][0], math.nan)
        lines.append(f"| {together} | {count} | {seconds:.3f} | {seconds / count:.4f} | "
                     f"{spectrum.hvps / count:.1f} | {base / rates[together]:.2f} | {fmt(peak_gib(device), 3)} |")
    # PyHessian's top-k on one minibatch (the loop the paper's code runs), as the anchor of the projection
    left = budget - (time.perf_counter() - start)
    ph, n, (_, ph_hvps) = reps_within(lambda: pyhessian_top5(model, minibatches[0], top_n=k,
                                                              max_iter=cfg["pyhessian_iter"]), args.reps, left * 0.7)
    lines.append(f"\nPyHessian eigenvalues(top_n={k}) on one minibatch of {mb}: {ph:.3f} s ({ph_hvps} HVPs, "
                 f"median of {n})")
    record.update(rates=rates, pyhessian=ph, auto=chosen)


def part_projection(lines: list, records: dict, cfg: dict) -> None:
    lines += [f"The paper's spectrum: {PAPER_MINIBATCHES} minibatches of {cfg['minibatch']} (10% of CIFAR-100's "
              f"train set), top-{cfg['k']} each, from the seconds per minibatch measured above.", "",
              "| model | PyHessian loop | together=1 | best together | auto_together's choice | best vs PyHessian |",
              "|---|---|---|---|---|---|"]

    def minutes(rate):
        return f"{rate * PAPER_MINIBATCHES / 60:.2f} min" if rate and math.isfinite(rate) else "n/a"
    for name, rec in records.items():
        rates = rec.get("rates") or {}
        if not rates:
            lines.append(f"| {name} | no spectrum measured | | | | |")
            continue
        best = min(rates, key=rates.get)
        auto = rec.get("auto")
        auto_rate = rates.get(auto)
        ph = rec.get("pyhessian", math.nan)
        lines.append(f"| {name} | {minutes(ph)} | {minutes(rates.get(1, math.nan))} | {minutes(rates[best])} "
                     f"(together={best}) | {auto} ({minutes(auto_rate) if auto_rate else 'rate not measured'}) | "
                     f"{ph / rates[best]:.1f}x |")


def part_landscape(lines: list, model, cfg: dict, device, args) -> None:
    from bench_landscape import plain_pass
    from vitlens.landscape import PointEvaluator, prepare_samples, random_directions
    from vitlens.landscape.surface import eval_mode
    n, bs = cfg["landscape_samples"], cfg["landscape_batch"]
    data = [random_batch(bs, cfg["size"], cfg["classes_of_model"], "cpu", seed=200 + i) for i in range(n // bs)]
    samples = prepare_samples(data, bs, seed=0, shuffle=False, device=device)
    directions = random_directions(model, 2, seed=0)
    reps = args.reps + 1
    with eval_mode(model):
        evaluator = PointEvaluator(model, samples, directions, weight_decay=5e-2)
        plain_s, _ = median_time(lambda: plain_pass(model, samples), reps)
        try:
            point_s, _ = median_time(lambda: evaluator.evaluate((0.3, -0.2)), reps)
            lines += [f"{samples.count} samples in batches of {bs}", "",
                      "| per grid point | seconds | x plain pass |", "|---|---|---|",
                      f"| plain evaluation pass (anchor) | {plain_s:.4f} | 1.00 |",
                      f"| vitlens PointEvaluator.evaluate | {point_s:.4f} | {point_s / plain_s:.2f} |"]
            for points in cfg["points"]:
                coords = [(0.1 * i, -0.05 * i) for i in range(points)]
                try:
                    seconds, _ = median_time(lambda: evaluator.evaluate_many(coords), reps)
                    lines.append(f"| PointEvaluator.evaluate_many, {points} points per pass (vmap over stacked "
                                 f"weights), per point | {seconds / points:.4f} | {seconds / points / plain_s:.2f} |")
                except Exception as err:
                    check_timeout(err)
                    lines.append(f"| evaluate_many, {points} points per pass | failed: {type(err).__name__}: "
                                 f"{str(err).splitlines()[0][:100]} | |")
            try:
                choice = evaluator.points_per_pass(probe=True)
                lines.append(f"\n`points_per_pass` = 0 (auto) chooses **{choice}** here "
                             f"(without probe on CPU: 1).")
            except Exception as err:
                check_timeout(err)
                lines.append(f"\nauto points_per_pass failed: {type(err).__name__}: {str(err).splitlines()[0][:100]}")
        finally:
            evaluator.restore()


def part_features(lines: list, model, cfg: dict, device, args) -> None:
    from vitlens.analyses.fourier import FourierReducer
    from vitlens.analyses.variance import VarianceReducer
    from vitlens.features import collect
    n, bs = cfg["feature_samples"], cfg["feature_batch"]
    batches = [random_batch(bs, cfg["size"], cfg["classes_of_model"], device, seed=300 + i) for i in range(n // bs)]

    @torch.no_grad()
    def plain():
        for x, _ in batches:
            model(x)

    def features():
        collect(model, batches, [FourierReducer(), VarianceReducer()], device=device)
    plain(), features()  # warm-up
    times = {"plain": [], "features": []}
    for rep in range(args.reps + 1):  # interleaved, alternating which goes first
        order = [("plain", plain), ("features", features)]
        for label, fn in (order if rep % 2 == 0 else order[::-1]):
            seconds, _ = median_time(fn, 1)
            times[label].append(seconds)
    ratio = statistics.median(f / p for p, f in zip(times["plain"], times["features"]))
    lines += [f"{n} samples in batches of {bs}, {len(times['plain'])} interleaved reps", "",
              "| pass | seconds (median) | x forward |", "|---|---|---|",
              f"| forward pass model(x) (anchor) | {statistics.median(times['plain']):.4f} | 1.00 |",
              f"| Fourier + variance collect | {statistics.median(times['features']):.4f} | {ratio:.2f} |"]


# ----------------------------------------------------------------------------- main


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="tiny models and sizes (CPU smoke run, < 1 min)")
    parser.add_argument("--device", default="auto", help="cuda, cpu or auto (cuda when present)")
    parser.add_argument("--out", default=os.environ.get("OUT") or "artifacts/gpu_check", help="report folder")
    parser.add_argument("--reps", type=int, default=None,
                        help="timed repetitions per measurement (median; default 3, --quick 1)")
    parser.add_argument("--budget", type=float, default=None,
                        help="seconds for the whole run (default 420, --quick 120); sections get what is left")
    parser.add_argument("--tests", choices=["auto", "yes", "no"], default="auto",
                        help="run the pytest section (auto: yes unless --quick)")
    parser.add_argument("--models", nargs="+", default=None, help="override the models")
    parser.add_argument("--setup-seconds", default=os.environ.get("GPU_CHECK_SETUP_SECONDS"))
    parser.add_argument("--setup-note", default=os.environ.get("GPU_CHECK_SETUP_NOTE"))
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args(argv)
    # vitlens measures in float32 (device.full_precision); the anchors (plain passes, PyHessian) too
    torch.backends.cudnn.conv.fp32_precision = torch.backends.cuda.matmul.fp32_precision = "ieee"
    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = dict(QUICK if args.quick else FULL)
    if args.models:
        cfg["models"] = args.models
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                          ("cpu" if args.device == "auto" else args.device))
    budget = args.budget or cfg["budget"]
    args.reps = args.reps or cfg["reps"]
    deadline = time.perf_counter() + budget
    caps = cfg["caps"]
    out = Path(args.out)
    report = Report(out / "report.md", f"vitlens GPU check ({'quick' if args.quick else 'full'}, {device})")
    report.parts.append(f"Run {time.strftime('%Y-%m-%d %H:%M:%S')}, budget {budget:.0f} s; medians of up to "
                        f"{args.reps} reps; timings synchronise CUDA. Generated by benchmarks/gpu_check.py.\n")
    with section(report, "environment", caps["env"], deadline) as lines:
        part_env(lines, device, args)
    run_tests = args.tests == "yes" or (args.tests == "auto" and not args.quick)
    with section(report, "tests (VITLENS_TEST_DEVICE=cuda)", caps["tests"], deadline) as lines:
        if run_tests:
            part_tests(lines, min(caps["tests"], deadline - time.perf_counter()) - 1)
        else:
            lines.append("skipped (--quick, or --tests no)")
    records: dict = {}
    for name in cfg["models"]:
        built = []
        with section(report, f"{name}: model", caps["env"], deadline) as lines:
            model, label, classes = build(name, cfg, device)
            built.append((model, classes))
            lines.append(label)
            if device.type == "cuda":
                lines.append(tf32_cost(model, cfg, device))
        if not built:
            continue
        model, classes = built[0]
        mcfg = dict(cfg, classes_of_model=classes)
        with section(report, f"{name}: one HVP vs one gradient", caps["hvp"], deadline) as lines:
            part_hvp(lines, model, mcfg, device, args)
        with section(report, f"{name}: top-{cfg['k']} vs PyHessian", caps["top5"], deadline) as lines:
            part_top5(lines, model, mcfg, device, args, min(caps["top5"], deadline - time.perf_counter()))
        records[name] = {}
        with section(report, f"{name}: max-eigenvalue spectrum", caps["spectrum"], deadline) as lines:
            part_spectrum(lines, model, mcfg, device, args, min(caps["spectrum"], deadline - time.perf_counter()),
                          records[name])
        with section(report, f"{name}: landscape grid point", caps["landscape"], deadline) as lines:
            part_landscape(lines, model, mcfg, device, args)
        with section(report, f"{name}: Fourier + variance pass", caps["features"], deadline) as lines:
            part_features(lines, model, mcfg, device, args)
        del model, built
    with section(report, "projected paper spectrum", caps["env"], deadline) as lines:
        part_projection(lines, records, cfg)
    print(f"report: {report.path}")
    return 0 if all(state == "ok" for _, state, _ in report.statuses) else 1


if __name__ == "__main__":
    sys.exit(main())
