"""Hessian analyses (Park & Kim 2022, Sec. 2.2, Fig. 1c/4): `vitlens run hessian --what ...`.

--what spectrum  the paper's max-eigenvalue spectrum: top-k eigenvalues of each minibatch (batch
                 `minibatch`, default 16) pooled; rows batch, rank, eigenvalue, residual;
                 summary NEP (share of negative eigenvalues), APE (mean positive eigenvalue).
--what topk      top-k eigenvalues (largest magnitude, sign kept) over the whole data set; rows rank,
                 eigenvalue, residual.
--what trace     Hutchinson, Hutch++ and/or Krylov-deflated trace; rows estimator, estimate, stderr,
                 hvps.
--what density   SLQ eigenvalue density; rows grid, density (Ritz nodes/weights in meta["ritz"]).
--what blocks    per block: top eigenvalue and trace of the Hessian restricted to its parameters, vs
                 normalised depth; rows block, kind, stage, depth, top_eigenvalue, trace, ...
--checkpoints DIR  the same for every epoch_*.safetensors that `vitlens train` wrote (column epoch).

The loss is cross-entropy (soft targets with --label-smoothing/--mixup/--cutmix) + (weight_decay/2)
||w||^2 on the job's data (optionally augmented with --augment), eval mode unless --train-mode; see
`vitlens.hessian`. --method pyhessian uses PyHessian 0.1 for topk/trace/spectrum.
"""
from __future__ import annotations

import math

import pandas as pd
import torch

from .. import distributed
from ..data import make_loader
from ..context import Context
from ..errors import VitlensError
from ..hessian import (LossConfig, block_curvature, eigenvalue_density, hessian_trace, max_eigenvalue_spectrum,
                       prepare_batches, spectrum_summary, top_eigenvalues)
from ..hessian.loss import num_classes_of
from ..models import blocks as model_blocks
from ..options import Limit, Option, loss_options
from ..result import Result
from . import Figure, Memory, Page, register_analysis

WHATS = ("spectrum", "topk", "trace", "density", "blocks")

SPECTRUM = {"what": ("spectrum",)}
OPTIONS = [
    Option("what", str, "spectrum", "which view of the Hessian", choices=WHATS),
    Option("top_k", int, 5, "eigenvalues per minibatch (spectrum) or over the data (topk)", low=1, high=200),
    Option("method", str, "lanczos", "vitlens' Lanczos, or PyHessian 0.1 as a reference", choices=("lanczos", "pyhessian")),
    Option("engine", str, "auto", "Hessian-vector product engine",
           choices=("auto", "double_backward", "recompute", "forward_over_reverse")),
    Option("minibatch", int, 16, "minibatch size of the spectrum (paper: 16)", low=1, high=4096, applies=SPECTRUM),
    Option("minibatches", int, 0, "how many minibatches (0 = all the data holds)", low=0, high=100000,
           limit=Limit("VITLENS_MAX_MINIBATCHES", 1000),
           applies=SPECTRUM),
    Option("together", int, 0, "minibatches per stacked (vmap) product; 0 = choose (a quick probe on a GPU, "
           "1 on CPU)", low=0, high=256, applies=SPECTRUM),
    Option("tol", float, 1e-2, "Lanczos: relative error bound per eigenvalue", low=1e-12, high=1.0),
    Option("bound", str, "residual", "Lanczos stop: residual (|r| <= tol|theta|) or gap (min of |r| and "
           "|r|^2/gap, Parlett ch. 11: fewer products, but a missed eigenvalue more often)",
           choices=("residual", "gap")),
    Option("max_steps", int, 100, "Lanczos steps at most", low=1, high=10000),
    Option("probes", int, 100, "trace: Hessian-vector products at most (blocks: 20 per block)", low=2, high=100000,
           applies={"what": ("trace", "blocks")}),
    Option("trace_rtol", float, 0.0, "trace: stop once stderr <= rtol * |trace| (0 = use all probes)", low=0.0,
           applies={"what": ("trace",)}),
    Option("estimator", str, "both", "trace estimator (both = hutchinson + krylov)",
           choices=("both", "all", "hutchinson", "hutchpp", "krylov"), applies={"what": ("trace",)}),
    Option("runs", int, 5, "density: SLQ runs", low=1, high=1000, applies={"what": ("density",)}),
    Option("steps", int, 80, "density: Lanczos steps per run", low=1, high=10000, applies={"what": ("density",)}),
    Option("points", int, 500, "density: grid points", low=2, high=100000, applies={"what": ("density",)}),
    Option("sigma_fraction", float, 0.01, "density: Gaussian width as a fraction of the spectrum's width",
           low=1e-9, high=1.0, applies={"what": ("density",)}),
    *loss_options(weight_decay=0.0),
    Option("train_mode", bool, False, "BatchNorm/dropout in training mode (default: eval mode)"),
]


def _config(ctx: Context, params: dict) -> LossConfig:
    return LossConfig(weight_decay=params["weight_decay"], label_smoothing=params["label_smoothing"],
                      mixup=params["mixup"], cutmix=params["cutmix"], train_mode=params["train_mode"],
                      seed=ctx.spec.seed)


def _batches(ctx: Context, dataset, batch_size: int) -> list:
    loader = make_loader(dataset, batch_size, seed=ctx.spec.seed)
    batches = [(torch.as_tensor(x), torch.as_tensor(y)) for x, y in loader]
    if not batches:
        raise VitlensError(f"data set {ctx.spec.dataset} is empty: the Hessian needs at least one sample")
    return batches


def _compute(ctx: Context, params: dict, what: str) -> tuple[pd.DataFrame, dict]:
    """One model state: the frame and summary of WHAT."""
    model, config, seed = ctx.model, _config(ctx, params), int(ctx.spec.seed)
    method, engine = params["method"], params["engine"]
    k, tol, max_steps = params["top_k"], params["tol"], params["max_steps"]
    dataset = ctx.augmented(params["augment"])

    if what == "spectrum":
        minibatches = _batches(ctx, dataset, params["minibatch"])
        limit = params["minibatches"] or None
        total = min(len(minibatches), limit or len(minibatches))
        mine = distributed.shard(total)  # under torchrun each rank takes every N-th minibatch
        spectrum = max_eigenvalue_spectrum(model, [minibatches[b] for b in mine], k=k, minibatch_limit=limit,
                                           config=config, tol=tol, max_steps=max_steps, engine=engine, seed=seed,
                                           method=method, progress=ctx.progress(len(mine), "hessian spectrum"),
                                           indices=mine, together=params["together"] or "auto",
                                           bound=params["bound"])
        rows = sorted((r for part in distributed.gather(spectrum.rows) for r in part),
                      key=lambda r: (r["batch"], r["rank"]))
        summary = dict(spectrum_summary([r["eigenvalue"] for r in rows]), minibatches=total,
                       minibatch=params["minibatch"], hvps=sum(distributed.gather(spectrum.hvps)),
                       seconds=round(spectrum.seconds, 3), ranks=distributed.world()[1],
                       together=spectrum.together)
        return pd.DataFrame(rows), summary

    with distributed.sharded_data():
        return _compute_dataset_level(ctx, params, what, dataset, config)


def _compute_dataset_level(ctx: Context, params: dict, what: str, dataset, config: LossConfig):
    """top-k, trace, density and blocks: the Hessian of the loss over the whole (sampled) data set.
    Under torchrun each rank holds every N-th batch and Hessian-vector products are summed."""
    model, seed = ctx.model, ctx.spec.seed
    method, engine = params["method"], params["engine"]
    k, tol, max_steps = params["top_k"], params["tol"], params["max_steps"]
    batches = _batches(ctx, dataset, ctx.spec.batch_size)
    rank, size = distributed.world()
    if size > 1:
        if len(batches) < size:
            raise VitlensError(f"{len(batches)} batches cannot be shared by {size} ranks; use more --samples")
        if method == "pyhessian":
            raise VitlensError("the PyHessian engine runs in one process; drop torchrun or use method=lanczos")
        # soft targets (mixup, cutmix, smoothing) are drawn over the whole data set first, as one
        # process draws them, and only then shared out
        batches = prepare_batches(batches, config, num_classes_of(model), model=model)[rank::size]
    if what == "topk":
        progress = ctx.progress(1, "hessian top-k")
        top = top_eigenvalues(model, batches, k=k, config=config, tol=tol, max_steps=max_steps, engine=engine,
                              seed=seed, method=method, bound=params["bound"])
        progress.update(1)
        frame = pd.DataFrame(dict(rank=range(len(top.eigenvalues)), eigenvalue=top.eigenvalues,
                                  residual=top.residuals))
        if getattr(top, "bounds", None) is not None and len(top.bounds) == len(frame):
            frame["error_bound"] = list(top.bounds)
        return frame, dict(eigenvalues=top.eigenvalues, hvps=top.hvps, converged=top.converged,
                           seconds=round(top.seconds, 3), method=top.method)
    if what == "trace":
        estimators = {"both": ["hutchinson", "krylov"],
                      "all": ["hutchinson", "hutchpp", "krylov"]}.get(params["estimator"], [params["estimator"]])
        if method == "pyhessian":
            estimators = ["pyhessian"]
        progress = ctx.progress(len(estimators), "hessian trace")
        rows, summary = [], {}
        for name in estimators:
            est = hessian_trace(model, batches, estimator="hutchinson" if name == "pyhessian" else name,
                                probes=params["probes"], rtol=params["trace_rtol"], config=config, engine=engine,
                                seed=seed, method=method)
            rows.append(dict(estimator=est.estimator, estimate=est.estimate, stderr=est.stderr, hvps=est.hvps))
            summary[est.estimator] = dict(trace=est.estimate, stderr=est.stderr, hvps=est.hvps)
            progress.update(1, name)
        best = min(rows, key=lambda r: r["stderr"])
        summary.update(trace=best["estimate"], stderr=best["stderr"], estimator=best["estimator"])
        return pd.DataFrame(rows), summary
    if what == "density":
        progress = ctx.progress(1, "hessian density")
        dens = eigenvalue_density(model, batches, runs=params["runs"], steps=params["steps"], points=params["points"],
                                  sigma_fraction=params["sigma_fraction"], config=config, engine=engine, seed=seed,
                                  method=method)
        progress.update(1)
        m1, m1_err = dens.moment(1)
        m2, m2_err = dens.moment(2)
        frame = pd.DataFrame(dict(grid=dens.grid.numpy(), density=dens.density.numpy()))
        summary = dict(sigma=dens.sigma, hvps=dens.hvps, mean_eigenvalue=m1, mean_eigenvalue_stderr=m1_err,
                       mean_square_eigenvalue=m2, mean_square_eigenvalue_stderr=m2_err,
                       min_node=float(min(t.min() for t in dens.nodes)),
                       max_node=float(max(t.max() for t in dens.nodes)))
        ritz = [dict(nodes=t.tolist(), weights=w.tolist()) for t, w in zip(dens.nodes, dens.weights)]
        return frame, dict(summary, _ritz=ritz)
    if what == "blocks":
        if method == "pyhessian":
            raise VitlensError("PyHessian cannot restrict the Hessian to a block's parameters; use method=lanczos")
        rows = block_curvature(model, batches, config=config, probes=min(params["probes"], 20), tol=tol,
                               max_steps=max_steps, engine=engine, seed=seed, progress=ctx.progress(len(model_blocks(model)), "hessian blocks"))
        frame = pd.DataFrame(rows)
        used = frame.dropna(subset=["top_eigenvalue"])
        top = used.loc[used["top_eigenvalue"].abs().idxmax()]
        return frame, dict(blocks=len(frame), sharpest_block=top["name"],
                           sharpest_eigenvalue=float(top["top_eigenvalue"]),
                           total_block_trace=float(used["trace"].sum()))
    raise VitlensError(f"--what must be one of {', '.join(WHATS)}, got {what!r}")


def _memory_batch(params, batch_size: int) -> int:
    """The batch of one Hessian-vector product: a spectrum's minibatches (stacked TOGETHER at once)."""
    if params["what"] == "spectrum":
        return params["minibatch"] * max(params["together"], 1)
    return batch_size


def _krylov_vectors(params) -> float:
    """Parameter-sized vectors the method keeps: the Lanczos basis (it grows by doubling up to the
    steps it takes), trace probes' deflation vectors, SLQ's basis per run."""
    what = params["what"]
    if what in ("spectrum", "topk", "blocks"):
        steps = min(params["max_steps"], 8 * params["top_k"] + 8)
        return 2 ** math.ceil(math.log2(steps)) * (max(params["together"], 1) if what == "spectrum" else 1)
    if what == "density":
        return params["steps"]
    return 4


@register_analysis("hessian", "Hessian eigenvalues: max-eigenvalue spectrum (NEP/APE), top-k, trace, density, "
                   "per-block curvature", OPTIONS,
                   conventions="loss = per-sample mean cross-entropy (log_softmax) + (wd/2)||w||^2, eval mode; "
                               "PyHessian's per-minibatch top-k for the spectrum",
                   lane="heavy", shards="minibatches (spectrum) or data batches",
                   page=Page("Hessian eigenvalues", "Hessian", 1, custom=True,
                             options=("what", "top_k", "minibatches", "minibatch", "together", "estimator", "probes",
                                      "weight_decay"),
                             labels={"what": "view", "top_k": "top k", "minibatches": "minibatches (0 = all)",
                                     "minibatch": "minibatch size (paper: 16)",
                                     "together": "minibatches at once (0 = auto)", "estimator": "trace estimator",
                                     "probes": "products at most (trace)",
                                     "weight_decay": "weight decay (shifts eigenvalues)"},
                             widget_args={"weight_decay": {"step": 0.0001}},
                             caption=("The curvature of the training loss (cross-entropy + optional weight decay, "
                                      "model in eval mode). Spectrum: the top-k eigenvalues (by magnitude, sign kept) "
                                      "of each minibatch's Hessian, pooled — the paper's 'max eigenvalue spectrum'. "
                                      "NEP is the share of negative eigenvalues (non-convexity), APE the mean positive "
                                      "one (sharpness). The paper finds ViTs have many negative eigenvalues that large "
                                      "data sets suppress, while ResNets have large positive ones; MSAs flatten the "
                                      "loss.")),
                   figures=[Figure("spectrum_density", when={"what": ("spectrum",)}),
                            Figure("eigen_bars", when={"what": ("topk",)}),
                            Figure("trace_estimates", when={"what": ("trace",)}),
                            Figure("eigen_density", when={"what": ("density",)}),
                            Figure("block_curvature", {"value": "top_eigenvalue"}, when={"what": ("blocks",)}),
                            Figure("block_curvature", {"value": "trace"}, when={"what": ("blocks",)})],
                   memory=Memory(weights=6, graph=3, working=3, data=1, batch=_memory_batch, more=_krylov_vectors))
def hessian(ctx: Context, params: dict) -> Result:
    what = params["what"]
    if len(ctx.dataset) == 0:
        raise VitlensError(f"data set {ctx.spec.dataset} is empty: the Hessian needs at least one sample")
    meta = {"analysis": "hessian", "what": what}
    frame, summary = _compute(ctx, params, what)
    ritz = summary.pop("_ritz", None)
    if ritz is not None:
        meta["ritz"] = ritz
    meta["summary"] = summary
    return Result(frame, meta)


__all__ = ["hessian"]
