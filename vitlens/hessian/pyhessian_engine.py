"""PyHessian (Yao, Gholami, Keutzer & Mahoney 2020) as an optional engine for top-k and trace.

PyHessian 0.1 takes a model, a criterion and one batch or a data loader; it forces eval mode and
has no weight decay (its criterion only sees outputs and targets), so those settings are refused
here rather than silently ignored. Soft targets work (the criterion is vitlens' cross-entropy).
Its `density()` calls `torch.eig`, removed from PyTorch, so density has no PyHessian engine.
PyHessian leaves create_graph gradients in each parameter's ``.grad``; they are put back as they
were. Its top-k is power iteration with deflation (defaults maxIter=100, tol=1e-3) and its trace
stops on a relative test divided by the signed trace (see DESIGN.md pitfalls).
"""
from __future__ import annotations

import contextlib
import time

import torch
import torch.nn as nn

from ..errors import VitlensError
from .lanczos import TopK
from .loss import LossConfig, num_classes_of, cross_entropy, hessian_mode, prepare_batches, trainable_parameters
from .trace import TraceEstimate, mean_stderr


def _import():
    try:
        from pyhessian import hessian  # deferred and guarded: an optional reference engine
    except Exception as err:  # not installed, or broken against this torch
        raise VitlensError(f"PyHessian is not usable here ({type(err).__name__}: {err}); "
                           "pip install pyhessian, or use method=lanczos") from None
    return hessian


@contextlib.contextmanager
def _pyhessian(model: nn.Module, data, config: LossConfig):
    if config.weight_decay:
        raise VitlensError("PyHessian takes no weight decay; use method=lanczos for weight_decay > 0")
    if config.train_mode:
        raise VitlensError("PyHessian forces eval mode; use method=lanczos for train mode")
    hessian = _import()
    params = trainable_parameters(model)
    device = next(model.parameters()).device
    batches = prepare_batches(data, config, num_classes_of(model), device, model)
    saved = [p.grad for p in params]
    try:
        with hessian_mode(model, train=False):
            torch.manual_seed(int(config.seed))
            cuda = device.type == "cuda"
            if len(batches) == 1:
                yield hessian(model, cross_entropy, data=batches[0], cuda=cuda)
            else:
                yield hessian(model, cross_entropy, dataloader=batches, cuda=cuda)
    finally:
        for p, g in zip(params, saved):
            p.grad = g


def pyhessian_top_eigenvalues(model: nn.Module, data, k: int = 5, config: LossConfig = LossConfig(),
                              max_iter: int = 100, tol: float = 1e-3, seed: int = 0):
    """PyHessian's `eigenvalues(top_n=k)` (power iteration with deflation), as a `TopK`."""
    if k > sum(p.numel() for p in trainable_parameters(model)):
        raise VitlensError(f"k={k} is larger than the number of parameters")
    start = time.perf_counter()
    config = LossConfig(config.weight_decay, config.label_smoothing, config.mixup, config.cutmix,
                        config.train_mode, seed)
    with _pyhessian(model, data, config) as h:
        values, vectors = h.eigenvalues(maxIter=max_iter, tol=tol, top_n=k)
        vectors = [[t.detach().clone() for t in v] for v in vectors]
    return TopK(list(map(float, values)), vectors, [None] * len(values), None, time.perf_counter() - start,
                method="pyhessian")


def pyhessian_trace(model: nn.Module, data, probes: int = 100, config: LossConfig = LossConfig(),
                    tol: float = 1e-3, seed: int = 0) -> TraceEstimate:
    """PyHessian's `trace(maxIter=probes)` (Hutchinson with its own stopping test), with a standard error."""
    config = LossConfig(config.weight_decay, config.label_smoothing, config.mixup, config.cutmix,
                        config.train_mode, seed)
    with _pyhessian(model, data, config) as h:
        samples = [float(s) for s in h.trace(maxIter=probes, tol=tol)]
    mean, stderr = mean_stderr(samples)
    return TraceEstimate("pyhessian", mean, stderr, len(samples), samples)
