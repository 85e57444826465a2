"""Hessian-vector products of the loss in `loss.py`, as a linear operator on flat vectors.

`HessianOperator(model, batches, config, params, engine)` gives ``matvec(v) = H v`` where H is the
Hessian of L(w) (sample-weighted mean over the batches + weight decay) with respect to PARAMS
(default: every trainable parameter), and v, H v are flat vectors of length ``dim`` (the parameters
concatenated in order; `unflatten` turns a flat vector back into tensors shaped like the params).

Engines (Pearlmutter 1994: H v is the directional derivative of the gradient):
  * ``double_backward``: build grad(L) with create_graph=True once per batch and keep the graphs;
    each product is one backward pass through them (``retain_graph=True``). Cheapest per product
    (no forward pass), memory grows with the number of batches kept.
  * ``recompute``: the same, but each product rebuilds each batch's graph (forward + backward +
    double backward): low memory, as PyHessian's data-loader mode.
  * ``forward_over_reverse``: ``torch.func.jvp`` of ``torch.func.grad``, rebuilt per product
    (forward + backward with forward-mode tangents). Low memory, eval mode only.
  * ``auto``: ``double_backward`` while the batches hold at most ``cache_samples`` samples, else
    ``recompute`` (measured in benchmarks/bench_hessian.py: on CPU, ``recompute`` and
    ``forward_over_reverse`` cost about the same, and ``double_backward`` with a kept graph is
    cheaper than either because it skips the forward pass).
``matmat(V)`` applies H to the rows of V; with ``double_backward`` it tries one batched backward
(``is_grads_batched``, i.e. vmap over the vectors) and falls back to a loop where an op has no
batching rule.

Use the operator inside `loss.hessian_mode(model, train)` (the high-level functions in
`vitlens.hessian` do this for you).
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn
from torch.func import functional_call, grad, jvp, vmap

from .. import distributed
from ..errors import VitlensError
from ..progress import checkpoint
from .loss import LossConfig, batch_loss, check_finite, cross_entropy, iter_batches, trainable_parameters

ENGINES = ("auto", "double_backward", "recompute", "forward_over_reverse")


class HessianOperator:
    """v -> H v for the loss over fixed batches (flat vectors of length `dim`)."""

    def __init__(self, model: nn.Module, batches: list, config: LossConfig = LossConfig(),
                 params: Sequence[nn.Parameter] | None = None, engine: str = "auto", cache_samples: int = 1024):
        if engine not in ENGINES:
            raise VitlensError(f"unknown HVP engine '{engine}'; choose from {', '.join(ENGINES)}")
        if not batches:
            raise VitlensError("the data set is empty: the Hessian needs at least one sample")
        self.model, self.batches, self.config = model, list(batches), config
        self.params = list(params) if params is not None else trainable_parameters(model)
        if not self.params:
            raise VitlensError("no trainable parameters selected: there is no Hessian to compute")
        self.shapes = [p.shape for p in self.params]
        self.sizes = [p.numel() for p in self.params]
        self.offsets = [sum(self.sizes[:k]) for k in range(len(self.sizes))]
        self.dim = sum(self.sizes)
        # Under torchrun with sharded data each rank holds part of the batches: weights use the total.
        self.dtype, self.device = self.params[0].dtype, self.params[0].device
        self.distributed = distributed.data_is_sharded()
        local = torch.tensor(float(sum(len(x) for x, _ in self.batches)), device=self.device)
        self.samples = int(distributed.all_reduce_sum(local).item()) if self.distributed else int(local.item())
        if engine == "auto":
            engine = "double_backward" if self.samples <= cache_samples else "recompute"
        if engine == "forward_over_reverse" and config.train_mode:
            raise VitlensError("the forward_over_reverse engine works in eval mode only; use double_backward")
        self.engine = engine
        self.hvps = 0  # Hessian-vector products so far (a batched product of k vectors counts k)
        self._graphs = None  # double_backward: one list of create_graph gradients per batch
        self.loss = None  # L(w) at the current weights (set when graphs are built)

    # ------------------------------------------------------------------ flat <-> parameter shapes
    def flatten(self, tensors: Sequence[torch.Tensor]) -> torch.Tensor:
        return torch.cat([t.reshape(-1) for t in tensors])

    def unflatten(self, flat: torch.Tensor) -> list[torch.Tensor]:
        return [part.view(shape) for part, shape in zip(torch.split(flat, self.sizes), self.shapes)]

    def random(self, generator: torch.Generator, kind: str = "gaussian") -> torch.Tensor:
        """A random flat vector (Gaussian or Rademacher), drawn on the CPU for reproducibility."""
        if kind == "rademacher":
            v = torch.randint(0, 2, (self.dim,), generator=generator).to(self.dtype) * 2 - 1
        else:
            v = torch.randn(self.dim, generator=generator, dtype=self.dtype)
        return v.to(self.device)

    # ------------------------------------------------------------------ gradients
    def _weighted_loss(self, index: int, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        loss = batch_loss(self.model, x, target)
        check_finite(loss, f" on batch {index}")
        return loss * (len(x) / self.samples)

    def _grads(self, loss: torch.Tensor) -> list[torch.Tensor | None]:
        return list(torch.autograd.grad(loss, self.params, create_graph=True, allow_unused=True))

    def _build_graphs(self) -> None:
        self._graphs, total = [], 0.0
        for i, x, t in iter_batches(self.batches, self.config):
            loss = self._weighted_loss(i, x, t)
            total += loss.item()
            self._graphs.append(self._grads(loss))
        self.loss = total

    def gradient(self) -> torch.Tensor:
        """The flat gradient of L (data term + weight decay) at the current weights."""
        out = torch.zeros(self.dim, dtype=self.dtype, device=self.device)
        for i, x, t in iter_batches(self.batches, self.config):
            grads = torch.autograd.grad(self._weighted_loss(i, x, t), self.params, allow_unused=True)
            out += self.flatten([torch.zeros_like(p) if g is None else g for g, p in zip(grads, self.params)])
        if self.distributed:
            distributed.all_reduce_sum(out)
        return out + self.config.weight_decay * self.flatten([p.detach() for p in self.params])

    # ------------------------------------------------------------------ products
    def _double_backward(self, grads, vs, retain: bool, batched: bool = False) -> list[torch.Tensor]:
        """d(grads . v)/dw through an existing create_graph gradient."""
        pairs = [(g, v, k) for k, (g, v) in enumerate(zip(grads, vs)) if g is not None and g.requires_grad]
        out: list = [None] * len(self.params)
        if pairs:
            hv = torch.autograd.grad([g for g, _, _ in pairs], self.params, grad_outputs=[v for _, v, _ in pairs],
                                     retain_graph=retain, allow_unused=True, is_grads_batched=batched)
            out = list(hv)
        return out

    def _accumulate(self, total: torch.Tensor, parts: list, batched: bool) -> None:
        lead = (total.shape[0],) if batched else ()
        for part, start, size in zip(parts, self.offsets, self.sizes):
            if part is not None:
                total[..., start:start + size] += part.reshape(*lead, size)

    def _products(self, V: torch.Tensor, batched: bool) -> torch.Tensor:
        """H applied to V (flat vector, or rows of a matrix when batched), without weight decay."""
        total = torch.zeros_like(V)
        vs = [t.reshape(V.shape[0], *s) if batched else t.view(s)
              for t, s in zip(torch.split(V, self.sizes, dim=-1), self.shapes)]
        if self.engine == "double_backward":
            if self._graphs is None:
                self._build_graphs()
            for grads in self._graphs:
                checkpoint()  # a worker may stop the job here
                self._accumulate(total, self._double_backward(grads, vs, retain=True, batched=batched), batched)
        elif self.engine == "recompute":
            for i, x, t in iter_batches(self.batches, self.config):
                grads = self._grads(self._weighted_loss(i, x, t))
                self._accumulate(total, self._double_backward(grads, vs, retain=batched, batched=batched), batched)
        else:
            total = self._forward_over_reverse(V, vs, batched)
        if self.distributed:
            distributed.all_reduce_sum(total)  # the other ranks' batches
        return total

    def _forward_over_reverse(self, V, vs, batched: bool) -> torch.Tensor:
        keys, hvp = functional_hvp(self.model, self.params)
        total = torch.zeros_like(V)
        tangents = dict(zip(keys, vs))
        for i, x, t in iter_batches(self.batches, self.config):
            weight = len(x) / self.samples
            hv = vmap(hvp, in_dims=(None, None, 0))(x, t, tangents) if batched else hvp(x, t, tangents)
            self._accumulate(total, [hv[k] * weight for k in keys], batched)
        return total

    @torch.no_grad()
    def _finish(self, hv: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        if self.config.weight_decay:
            hv = hv + self.config.weight_decay * v  # Hessian of (wd/2)||w||^2 is wd * I
        return hv

    def matvec(self, v: torch.Tensor) -> torch.Tensor:
        """H v for a flat vector v."""
        v = v.to(self.device, self.dtype)
        hv = self._products(v, batched=False)
        self.hvps += 1
        return self._finish(hv.detach(), v)

    def matmat(self, V: torch.Tensor) -> torch.Tensor:
        """H applied to each row of V (k, dim): one batched pass where the engine allows, else a loop."""
        V = V.to(self.device, self.dtype)
        if self.engine != "recompute" and len(V) > 1:
            try:
                HV = self._products(V, batched=True)
                self.hvps += len(V)
                return self._finish(HV.detach(), V)
            except (RuntimeError, NotImplementedError):
                pass  # an op without a batching rule: fall back to one product per vector
        return torch.stack([self.matvec(v) for v in V])

    def release(self) -> None:
        """Drop kept graphs (frees their memory)."""
        self._graphs = None


def batch_loss_functional(model: nn.Module, weights: dict, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Data loss on one batch with WEIGHTS (a {name: tensor} dict) swapped in (torch.func)."""

    return cross_entropy(functional_call(model, weights, (x,)), target)


def functional_hvp(model: nn.Module, params: Sequence[nn.Parameter]):
    """(keys, hvp): ``hvp(x, t, tangents)`` is the Hessian of the batch loss on (x, t) with respect to
    PARAMS (names KEYS), applied to TANGENTS ({name: tensor}), as ``jvp(grad(loss))`` (forward over
    reverse, torch.func): no kept graph, and it composes with vmap."""
    names = {id(p): n for n, p in model.named_parameters()}
    keys = [names[id(p)] for p in params]
    primals = {k: p.detach() for k, p in zip(keys, params)}

    def hvp(x, t, tangents):
        return jvp(grad(lambda w: batch_loss_functional(model, w, x, t)), (primals,), (tangents,))[1]
    return keys, hvp


class StackedMinibatchHessians:
    """``matmat(V, rows)``: row i of V multiplied by the Hessian of minibatch ``rows[i]``'s loss, for
    several minibatches in one pass (vmap over (x_b, t_b, v_b) of `functional_hvp`).

    The max-eigenvalue spectrum runs one Lanczos per minibatch; stacking them lets one batched
    product serve all, which fills a GPU that a 16-sample minibatch leaves mostly idle. The
    minibatches must have equal shapes; eval mode only (BatchNorm in train mode would mix the
    stacked minibatches' statistics). Use inside `loss.hessian_mode(model)`.
    """

    def __init__(self, model: nn.Module, batches: list, config: LossConfig = LossConfig(),
                 params: Sequence[nn.Parameter] | None = None):
        if config.train_mode:
            raise VitlensError("minibatches can be stacked in eval mode only")
        if len({(tuple(x.shape), tuple(t.shape), t.dtype) for x, t in batches}) != 1:
            raise VitlensError("stacked minibatches must all have the same shape")
        self.model, self.config = model, config
        self.params = list(params) if params is not None else trainable_parameters(model)
        self.X = torch.stack([x for x, _ in batches])
        self.T = torch.stack([t for _, t in batches])
        self.shapes = [p.shape for p in self.params]
        self.sizes = [p.numel() for p in self.params]
        self.dim = sum(self.sizes)
        self.keys, self._hvp = functional_hvp(model, self.params)
        with torch.no_grad():
            for b, (x, t) in enumerate(batches):
                check_finite(batch_loss(model, x, t), f" on minibatch {b}")

    def matmat(self, V: torch.Tensor, rows: list[int]) -> torch.Tensor:
        checkpoint()  # a worker may stop the job here
        tangents = {k: part.reshape(len(rows), *shape)
                    for k, part, shape in zip(self.keys, torch.split(V, self.sizes, dim=1), self.shapes)}
        hv = vmap(self._hvp)(self.X[rows], self.T[rows], tangents)
        out = torch.cat([hv[k].reshape(len(rows), -1) for k in self.keys], dim=1).detach()
        return out + self.config.weight_decay * V if self.config.weight_decay else out
