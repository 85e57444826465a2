"""High-level Hessian functions on a model and data: top-k, trace, density, max-eigenvalue spectrum,
per-block curvature. Each takes one (x, y) batch or an iterable of batches (e.g. a DataLoader),
puts the model in `hessian_mode` (eval by default) and restores it afterwards.

The paper's max-eigenvalue spectrum (Park & Kim 2022, Fig. 1c/4): for each of M minibatches the
top-k eigenvalues (by magnitude, sign kept) of that minibatch's Hessian, pooled. NEP is the share
of negative eigenvalues in the pool, APE the mean of the positive ones.
"""
from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass, field

import torch
import torch.nn as nn

from ..device import seconds as device_seconds, synchronize
from ..errors import VitlensError
from ..features import normalised_depth
from ..models import blocks as model_blocks
from .density import Density, slq
from .hvp import HessianOperator, StackedMinibatchHessians
from .lanczos import TopK, top_eigenpairs, top_eigenpairs_stacked
from .loss import LossConfig, hessian_mode, num_classes_of, prepare_batches, trainable_parameters
from .pyhessian_engine import pyhessian_top_eigenvalues, pyhessian_trace
from .trace import TraceEstimate, hutchinson, hutchpp, krylov_deflated

METHODS = ("lanczos", "pyhessian")


def _device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


@contextlib.contextmanager
def hessian_operator(model: nn.Module, data, config: LossConfig = LossConfig(), params=None,
                     engine: str = "auto", num_classes: int | None = None):
    """`HessianOperator` of the loss on DATA, valid inside the block (model restored on exit)."""
    params = list(params) if params is not None else trainable_parameters(model)
    batches = prepare_batches(data, config, num_classes or num_classes_of(model), _device(model), model)
    with hessian_mode(model, config.train_mode):
        op = HessianOperator(model, batches, config, params=params, engine=engine)
        try:
            yield op
        finally:
            op.release()


def _generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(int(seed))


def top_eigenvalues(model: nn.Module, data, k: int = 5, config: LossConfig = LossConfig(), tol: float = 1e-2,
                    max_steps: int = 100, engine: str = "auto", seed: int = 0, params=None,
                    method: str = "lanczos", bound: str = "residual") -> TopK:
    """The K eigenvalues of largest magnitude of the loss Hessian (sign kept) and their eigenvectors.

    Eigenvectors come as lists of tensors shaped like PARAMS (default: all trainable parameters), unit
    norm over all of them together (directions for loss-landscape plots). Lanczos stops when each
    eigenvalue's error bound (BOUND "gap": min(residual, residual^2 / gap); "residual": the residual
    norm; see `lanczos.error_bounds`) is at most TOL times its magnitude.
    """
    start = time.perf_counter()
    if method == "pyhessian":
        return pyhessian_top_eigenvalues(model, data, k, config, seed=seed)
    _check_method(method)
    with hessian_operator(model, data, config, params, engine) as op:
        if k > op.dim:
            raise VitlensError(f"k={k} is larger than the number of parameters ({op.dim})")
        pairs = top_eigenpairs(op.matvec, op.dim, k=k, tol=tol, max_steps=max_steps, generator=_generator(seed),
                               dtype=op.dtype, device=op.device, bound=bound)
        vectors = [[t.detach().clone() for t in op.unflatten(v)] for v in pairs.eigenvectors]
    return TopK(pairs.eigenvalues, vectors, pairs.residuals, pairs.hvps, time.perf_counter() - start,
                converged=pairs.converged, bounds=pairs.bounds)


def hessian_trace(model: nn.Module, data, estimator: str = "hutchinson", probes: int = 100, rtol: float = 0.0,
                  atol: float = 0.0, config: LossConfig = LossConfig(), engine: str = "auto", seed: int = 0,
                  params=None, method: str = "lanczos") -> TraceEstimate:
    """tr(H) with a standard error: ESTIMATOR "hutchinson", "hutchpp" or "krylov" (at most PROBES products)."""
    if method == "pyhessian":
        return pyhessian_trace(model, data, probes, config, seed=seed)
    _check_method(method)
    with hessian_operator(model, data, config, params, engine) as op:
        kw = dict(max_probes=probes, rtol=rtol, atol=atol, generator=_generator(seed), dtype=op.dtype,
                  device=op.device)
        if estimator == "hutchinson":
            return hutchinson(op.matvec, op.dim, **kw)
        if estimator == "hutchpp":
            return hutchpp(op.matvec, op.dim, matmat=op.matmat, **kw)
        if estimator == "krylov":
            return krylov_deflated(op.matvec, op.dim, **kw)
    raise VitlensError(f"unknown trace estimator '{estimator}'; choose hutchinson, hutchpp or krylov")


def eigenvalue_density(model: nn.Module, data, runs: int = 5, steps: int = 80, points: int = 1000,
                       sigma: float | None = None, sigma_fraction: float = 0.01, config: LossConfig = LossConfig(),
                       engine: str = "auto", seed: int = 0, params=None, method: str = "lanczos") -> Density:
    """Eigenvalue density by stochastic Lanczos quadrature (RUNS runs of STEPS steps, Gaussian broadening)."""
    if method == "pyhessian":
        raise VitlensError("PyHessian's density() calls torch.eig, which PyTorch removed; use method=lanczos "
                           "(vitlens' own SLQ)")
    _check_method(method)
    with hessian_operator(model, data, config, params, engine) as op:
        return slq(op.matvec, op.dim, runs=runs, steps=steps, points=points, sigma=sigma,
                   sigma_fraction=sigma_fraction, generator=_generator(seed), dtype=op.dtype, device=op.device)


def _check_method(method: str) -> None:
    if method not in METHODS:
        raise VitlensError(f"unknown method '{method}'; choose from {', '.join(METHODS)}")


@dataclass
class Spectrum:
    rows: list[dict] = field(default_factory=list)  # batch, rank, eigenvalue, residual, error_bound, hvps
    hvps: int = 0
    seconds: float = 0.0
    together: int = 1  # minibatches per stacked product (as chosen, e.g. by auto_together)

    @property
    def eigenvalues(self) -> list[float]:
        return [r["eigenvalue"] for r in self.rows]

    def summary(self) -> dict:
        return spectrum_summary(self.eigenvalues)


def spectrum_summary(eigenvalues) -> dict:
    """NEP (share of negative eigenvalues), APE (mean positive eigenvalue) and more of a pooled spectrum."""
    values = [float(v) for v in eigenvalues]
    positive = [v for v in values if v > 0]
    negative = [v for v in values if v < 0]
    total_abs = sum(abs(v) for v in values)
    return dict(count=len(values),
                nep=len(negative) / len(values) if values else math.nan,
                ape=sum(positive) / len(positive) if positive else math.nan,
                negative_mass=sum(-v for v in negative) / total_abs if total_abs else math.nan,
                max_eigenvalue=max(values) if values else math.nan,
                min_eigenvalue=min(values) if values else math.nan)


def max_eigenvalue_spectrum(model: nn.Module, minibatches, k: int = 5, minibatch_limit: int | None = None,
                            config: LossConfig = LossConfig(), tol: float = 1e-2, max_steps: int = 100,
                            engine: str = "auto", seed: int = 0, method: str = "lanczos",
                            progress=None, indices=None, together: int | str = 1,
                            bound: str = "residual") -> Spectrum:
    """Top-K eigenvalues of each minibatch's Hessian (paper: batch 16, M ~ 10% of the train set).

    INDICES (default 0, 1, ...) number the minibatches given; each minibatch's seeds follow its index,
    so a share of the minibatches (torchrun) gives the same rows as the whole loop. TOGETHER > 1 runs
    that many minibatches' Lanczos iterations in lockstep with one stacked product per step
    (`StackedMinibatchHessians`, eval mode, equal-shaped minibatches; the same start vectors, so the
    same rows to float precision): for GPUs, which a 16-sample minibatch leaves mostly idle.
    TOGETHER "auto" asks `auto_together` (1 on CPU; on CUDA a short timing probe); the choice is
    kept in ``Spectrum.together``."""
    out, start = Spectrum(), time.perf_counter()
    minibatches = list(minibatches)
    indices = list(range(len(minibatches))) if indices is None else list(indices)
    stackable = method == "lanczos" and not config.train_mode
    if isinstance(together, str):
        if together.strip().lower() != "auto":
            raise VitlensError(f"together must be a positive integer or 'auto', got '{together}'")
        count = len(minibatches) if minibatch_limit is None else min(len(minibatches), int(minibatch_limit))
        together = (auto_together(model, minibatches[0], config=config, limit=count)
                    if stackable and minibatches else 1)
    stack = max(int(together), 1) if stackable else 1
    out.together = stack
    groups: list[list] = []  # consecutive minibatches of one shape, at most STACK per group
    last_shape = None
    for b, batch in zip(indices, minibatches):
        if minibatch_limit is not None and b >= minibatch_limit:
            break
        shape = tuple(torch.as_tensor(batch[0]).shape)
        if groups and len(groups[-1]) < stack and shape == last_shape:
            groups[-1].append((b, batch))
        else:
            groups.append([(b, batch)])
        last_shape = shape
    for group in groups:
        tops = (_stacked_top(model, group, k, config, tol, max_steps, seed, bound) if len(group) > 1 else
                [top_eigenvalues(model, group[0][1], k, _minibatch_config(config, group[0][0]), tol, max_steps,
                                 engine, seed + group[0][0], method=method, bound=bound)])
        for (b, _), top in zip(group, tops):
            out.hvps += top.hvps or 0
            bounds = top.bounds or [None] * len(top.eigenvalues)
            for rank, (value, residual, err) in enumerate(zip(top.eigenvalues, top.residuals, bounds)):
                out.rows.append(dict(batch=b, rank=rank, eigenvalue=value, residual=residual, error_bound=err,
                                     hvps=top.hvps))
            if progress is not None:
                progress.update(1, f"batch {b}: max |eig| {abs(top.eigenvalues[0]):.4g}")
    if not out.rows:
        raise VitlensError("no minibatches: the data set is empty")
    out.seconds = time.perf_counter() - start
    return out


def _minibatch_config(config: LossConfig, b: int) -> LossConfig:
    """Minibatch B's loss: its soft targets are mixed with seed config.seed + B."""
    return LossConfig(config.weight_decay, config.label_smoothing, config.mixup, config.cutmix,
                      config.train_mode, config.seed + b)


def _stacked_top(model, group, k, config, tol, max_steps, seed, bound="residual") -> list[TopK]:
    """Top-K of each (index, minibatch) in GROUP by lockstep Lanczos (see max_eigenvalue_spectrum)."""
    start = time.perf_counter()
    device, classes = _device(model), num_classes_of(model)
    batches = [prepare_batches(batch, _minibatch_config(config, b), classes, device, model)[0] for b, batch in group]
    with hessian_mode(model):
        op = StackedMinibatchHessians(model, batches, config)
        starts = torch.stack([torch.randn(op.dim, generator=_generator(seed + b), dtype=op.X.dtype)
                              for b, _ in group]).to(device)
        pairs = top_eigenpairs_stacked(op.matmat, starts, k, tol, max_steps, bound)
    seconds = (time.perf_counter() - start) / len(group)
    return [TopK(p.eigenvalues, [], p.residuals, p.hvps, seconds, converged=p.converged, bounds=p.bounds)
            for p in pairs]


def auto_together(model: nn.Module, sample_batch, device: torch.device | str | None = None,
                  candidates=(1, 4, 16), config: LossConfig = LossConfig(), limit: int | None = None,
                  memory_fraction: float = 0.8, basis_rows: int = 32, steps: int = 12, reps: int = 2,
                  probe: bool | None = None) -> int:
    """How many minibatches `max_eigenvalue_spectrum` should stack per product (its together="auto").

    1 on CPU (measured there: stacking does not pay) and in train mode (minibatches cannot be stacked),
    without a probe. On CUDA a short probe on SAMPLE_BATCH (one (x, y) minibatch, repeated), after one
    untimed warm-up of each path: for n = 1 the path together=1 takes (`HessianOperator`, kept graph:
    one graph build, then products), costed per minibatch as (build + first product + (STEPS - 1) more
    products) / STEPS; for each larger n in CANDIDATES (at most LIMIT, e.g. the number of minibatches)
    REPS timed stacked products of n vectors (`StackedMinibatchHessians.matmat`, what each lockstep
    Lanczos step does), costed as seconds / n. The best seconds per minibatch wins; a larger n only when
    it is at least 10% better than the best so far. Memory bounds the choice: n is tried only while the
    Lanczos bases of n runs (n x BASIS_ROWS x dim floats; the basis grows by doubling from 16 rows) plus
    the last probe's peak memory scaled to n fit in MEMORY_FRACTION of the free GPU memory, and a probe
    that runs out of memory (or has no vmap rule) ends the search. The probe costs a few products per
    candidate: well under a second per candidate at paper scale on an H100/H200. PROBE=True runs it on
    any device (on the CPU without the memory bound), PROBE=False never (returns 1)."""
    device = torch.device(device) if device is not None else _device(model)
    cuda = device.type == "cuda"
    if config.train_mode or not (cuda if probe is None else probe):
        return 1
    cap = max(1, int(limit)) if limit is not None else max(candidates)
    sizes = sorted({max(1, min(int(n), cap)) for n in candidates} | {1})
    batch = prepare_batches(sample_batch, config, num_classes_of(model), device, model)[0]
    best, best_rate, peak_per_n = 1, math.inf, 0.0

    def clock(fn) -> float:
        return device_seconds(fn, device)

    with hessian_mode(model):
        dim = sum(p.numel() for p in trainable_parameters(model))
        itemsize = next(model.parameters()).element_size()
        for n in sizes:
            synchronize(device)
            free = torch.cuda.mem_get_info(device)[0] if cuda else math.inf
            if n > 1 and n * (basis_rows * dim * itemsize + peak_per_n) > memory_fraction * free:
                break
            base = torch.cuda.memory_allocated(device) if cuda else 0
            if cuda:
                torch.cuda.reset_peak_memory_stats(device)
            op = V = None
            try:
                if n == 1:
                    v = torch.randn(dim, device=device, dtype=batch[0].dtype)
                    for _ in range(2):  # the first operator warms up, the second is timed
                        op = HessianOperator(model, [batch], config)
                        first = clock(lambda: op.matvec(v))
                        later = min(clock(lambda: op.matvec(v)) for _ in range(max(1, reps)))
                        op.release()
                    rate = (first + (steps - 1) * later) / steps
                else:
                    op = StackedMinibatchHessians(model, [batch] * n, config)
                    V = torch.randn(n, op.dim, device=device, dtype=op.X.dtype)
                    rows = list(range(n))
                    op.matmat(V, rows)  # warm-up (kernels, allocator)
                    rate = min(clock(lambda: op.matmat(V, rows)) for _ in range(max(1, reps))) / n
                peak_per_n = (torch.cuda.max_memory_allocated(device) - base) / n if cuda else 0.0
            except (torch.cuda.OutOfMemoryError, RuntimeError):  # no memory, or no vmap rule: stop here
                break
            finally:
                if isinstance(op, HessianOperator):
                    op.release()
                op = V = None
                if cuda:
                    torch.cuda.empty_cache()
            if rate < 0.9 * best_rate:
                best, best_rate = n, rate
    return best


def block_curvature(model: nn.Module, data, config: LossConfig = LossConfig(), probes: int = 20,
                    tol: float = 1e-2, max_steps: int = 100, engine: str = "auto", seed: int = 0,
                    progress=None) -> list[dict]:
    """Per block (see `vitlens.blocks`): top eigenvalue (by magnitude) and trace of the Hessian
    restricted to that block's parameters (the diagonal block H_bb, other weights held fixed)."""
    parts = model_blocks(model)
    trainable_parameters(model)  # raises when nothing is trainable
    depths = normalised_depth(parts)  # the same depth axis as the feature analyses
    rows = []
    for i, block in enumerate(parts):
        params = [p for p in block.parameters() if p.requires_grad]
        row = dict(block=i, name=block.name, kind=block.kind, stage=block.stage,
                   depth=depths[i], params=sum(p.numel() for p in params),
                   top_eigenvalue=math.nan, trace=math.nan, trace_stderr=math.nan, hvps=0)
        if params:
            with hessian_operator(model, data, config, params, engine) as op:
                pairs = top_eigenpairs(op.matvec, op.dim, k=1, tol=tol, max_steps=max_steps,
                                       generator=_generator(seed + i), dtype=op.dtype, device=op.device)
                trace = hutchinson(op.matvec, op.dim, max_probes=max(probes, 2), generator=_generator(seed + i),
                                   dtype=op.dtype, device=op.device)
                row.update(top_eigenvalue=pairs.eigenvalues[0], trace=trace.estimate, trace_stderr=trace.stderr,
                           hvps=op.hvps)
        rows.append(row)
        if progress is not None:
            progress.update(1, block.name)
    return rows
