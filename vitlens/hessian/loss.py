"""The loss whose Hessian vitlens measures, and the model state it is measured in.

Park & Kim (2022) take the Hessian of the training objective: cross-entropy with hard labels or soft
targets (label smoothing, mixup, cutmix) plus weight decay, with the model in eval mode (BatchNorm
uses its running statistics). Here

    L(w) = (1/N) sum_i CE(f(x_i; w), t_i) + (weight_decay / 2) * ||w||^2

where CE(z, t) = -sum_c t_c log softmax(z)_c for soft targets t (rows summing to 1) and the usual
cross-entropy for integer labels, and w are the parameters the Hessian is taken over. The factor 1/2
makes the weight-decay term add exactly ``weight_decay * I`` to the Hessian, so every eigenvalue
shifts by ``weight_decay`` and the trace by ``weight_decay * n_params`` (the same convention as SGD's
``weight_decay``, whose gradient is ``weight_decay * w``).

`hessian_mode` puts a model into the state the Hessian is taken in and restores everything
afterwards: train/eval flags, BatchNorm running statistics (train mode updates them), the global
random state (dropout is re-seeded per batch so every Hessian-vector product sees the same masks),
and timm's fused attention, whose double backward is not implemented on CPU (the math SDPA backend
is used inside the block, fused attention switched off per module).
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Iterable, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

from ..data import soft_targets
from ..device import full_precision
from ..errors import VitlensError
from ..progress import checkpoint


@dataclass(frozen=True)
class LossConfig:
    """What the loss is: weight decay, soft-target augmentation (applied once, seeded), mode."""

    weight_decay: float = 0.0
    label_smoothing: float = 0.0
    mixup: float = 0.0
    cutmix: float = 0.0
    train_mode: bool = False
    seed: int = 0

    def __post_init__(self):
        if self.weight_decay < 0:
            raise VitlensError(f"weight decay must be >= 0, got {self.weight_decay}")


def cross_entropy(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy; `target` is integer labels (B,) or soft targets (B, C)."""
    if target.dtype in (torch.long, torch.int, torch.int16, torch.int8, torch.uint8):
        return F.cross_entropy(logits, target.long())
    return torch.sum(-target * F.log_softmax(logits, dim=1), dim=1).mean()


def weight_decay_term(params: Sequence[torch.Tensor], weight_decay: float) -> torch.Tensor | float:
    """(weight_decay / 2) * ||w||^2: its Hessian is weight_decay * I."""
    if weight_decay == 0:
        return 0.0
    return 0.5 * weight_decay * sum(torch.sum(p * p) for p in params)


def trainable_parameters(model: nn.Module) -> list[nn.Parameter]:
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise VitlensError("the model has no trainable parameters (all have requires_grad=False): "
                           "there is no Hessian to compute")
    return params


def num_classes_of(model: nn.Module, fallback: int | None = None) -> int:
    n = getattr(model, "num_classes", None) or (getattr(model, "pretrained_cfg", None) or {}).get("num_classes")
    return int(n or fallback or 0)


def prepare_batches(data, config: LossConfig = LossConfig(), num_classes: int | None = None,
                    device: torch.device | str | None = None,
                    model: nn.Module | None = None) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Turn one (x, y) batch or an iterable of them into a fixed list of (x, target) on DEVICE.

    With label smoothing / mixup / cutmix the batch is mixed once here (generator seeded with
    ``config.seed``), so the loss is a fixed function of the weights and the Hessian well defined.
    The number of classes comes from NUM_CLASSES, else from MODEL's output width.
    """
    if isinstance(data, (tuple, list)) and len(data) == 2 and isinstance(data[0], torch.Tensor):
        data = [data]
    generator = torch.Generator().manual_seed(int(config.seed))
    soft = config.label_smoothing > 0 or config.mixup > 0 or config.cutmix > 0
    batches = []
    for x, y in data:
        x, y = torch.as_tensor(x), torch.as_tensor(y)
        if len(x) == 0:
            continue
        if soft and y.dim() == 1:
            if not num_classes and model is not None:
                with torch.no_grad(), hessian_mode(model):
                    num_classes = int(model(x[:1].to(next(model.parameters()).device)).shape[-1])
            if not num_classes:
                raise VitlensError("soft targets need the number of classes (model.num_classes)")
            x, y = soft_targets(x, y, num_classes, config.mixup, config.cutmix, config.label_smoothing, generator)
        if device is not None:
            x, y = x.to(device), y.to(device)
        batches.append((x, y))
    if not batches:
        raise VitlensError("the data set is empty: the Hessian needs at least one sample")
    return batches


def batch_loss(model: nn.Module, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Data term of the loss on one batch (no weight decay)."""
    return cross_entropy(model(x), target)


def total_loss(model: nn.Module, batches, config: LossConfig = LossConfig(),
               params: Sequence[torch.Tensor] | None = None) -> torch.Tensor:
    """L(w) over all batches (sample-weighted mean) + (weight_decay/2)||w||^2 (for tests and checks)."""
    params = list(params) if params is not None else trainable_parameters(model)
    n = sum(len(x) for x, _ in batches)
    data = sum(batch_loss(model, x, t) * (len(x) / n) for x, t in batches)
    return data + weight_decay_term(params, config.weight_decay)


def check_finite(loss: torch.Tensor, where: str = "") -> None:
    if not torch.isfinite(loss).all():
        raise VitlensError(f"the loss is {loss.item()}{where}: the Hessian of a non-finite loss is undefined "
                           "(check the weights and the data)")


@contextlib.contextmanager
def hessian_mode(model: nn.Module, train: bool = False):
    """Model in eval (or train) mode with double-backward-safe attention and float32 kernels (no TF32,
    `full_precision`); everything restored after."""

    modes = {m: m.training for m in model.modules()}
    fused = {m: m.fused_attn for m in model.modules() if isinstance(getattr(m, "fused_attn", None), bool)}
    buffers = {}
    if train:  # BatchNorm updates its running statistics in train mode: keep a copy to put back
        buffers = {name: b.detach().clone() for name, b in model.named_buffers()}
    try:
        for m in fused:
            m.fused_attn = False
        model.train(train)
        with torch.random.fork_rng(devices=_cuda_devices(model)), sdpa_kernel(SDPBackend.MATH), full_precision():
            yield model
    finally:
        for m, flag in modes.items():
            m.training = flag
        for m, flag in fused.items():
            m.fused_attn = flag
        if buffers:
            with torch.no_grad():
                for name, b in model.named_buffers():
                    if name in buffers:
                        b.copy_(buffers[name])


def _cuda_devices(model: nn.Module) -> list:
    return sorted({p.device.index or 0 for p in model.parameters() if p.device.type == "cuda"})


def batch_seed(config: LossConfig, index: int) -> int:
    """The seed each batch's forward pass runs under (fixes dropout masks in train mode)."""
    return int(config.seed) * 100003 + int(index)


def iter_batches(batches: Iterable, config: LossConfig):
    """Yield (index, x, target), re-seeding the RNG first when in train mode (dropout, drop-path)."""
    for i, (x, t) in enumerate(batches):
        checkpoint()  # a worker may stop the job here (each batch of each Hessian-vector product)
        if config.train_mode:
            torch.manual_seed(batch_seed(config, i))
        yield i, x, t
