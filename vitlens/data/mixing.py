"""Soft targets for training and the loss: label smoothing, mixup and cutmix."""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import VitlensError


def _beta(alpha: float, generator: torch.Generator | None) -> float:
    """One draw from Beta(alpha, alpha), reproducible from a torch generator."""
    seed = int(torch.randint(0, 2**62, (1,), generator=generator))
    return float(np.random.default_rng(seed).beta(alpha, alpha))


def soft_targets(x: torch.Tensor, y: torch.Tensor, num_classes: int, mixup_alpha: float = 0.0,
                 cutmix_alpha: float = 0.0, label_smoothing: float = 0.0,
                 generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Mix a batch and give soft targets (rows sum to 1), as in the paper's training loss.

    label smoothing: (1 - eps) * one_hot + eps / K (Szegedy et al. 2016).
    mixup: x = lam x + (1 - lam) x[perm], lam ~ Beta(a, a) (Zhang et al. 2018).
    cutmix: paste a box of x[perm] with area ~ (1 - lam); the label weight is the actual
    pasted area after clipping at the border (Yun et al. 2019).
    With both alphas > 0 one of the two is picked per batch with probability 1/2 (as timm).
    All zero: x is returned unchanged and the targets are one-hot.
    """
    if mixup_alpha < 0 or cutmix_alpha < 0 or not 0 <= label_smoothing < 1:
        raise VitlensError("mixup/cutmix alpha must be >= 0 and label smoothing in [0, 1)")
    y = torch.as_tensor(y).long()
    if y.numel() and (int(y.min()) < 0 or int(y.max()) >= num_classes):
        raise VitlensError(f"labels must be in 0..{num_classes - 1} for {num_classes} classes")
    targets = F.one_hot(y, num_classes).float()
    if label_smoothing > 0:
        targets = targets * (1 - label_smoothing) + label_smoothing / num_classes
    if mixup_alpha == 0 and cutmix_alpha == 0:
        return x, targets

    use_cutmix = cutmix_alpha > 0
    if mixup_alpha > 0 and cutmix_alpha > 0:
        use_cutmix = bool(torch.rand(1, generator=generator) < 0.5)
    lam = _beta(cutmix_alpha if use_cutmix else mixup_alpha, generator)
    perm = torch.randperm(len(y), generator=generator)
    if use_cutmix:
        height, width = x.shape[-2:]
        cut = math.sqrt(1.0 - lam)
        cut_h, cut_w = int(height * cut), int(width * cut)
        cy = int(torch.randint(0, height, (1,), generator=generator))
        cx = int(torch.randint(0, width, (1,), generator=generator))
        top, bottom = max(cy - cut_h // 2, 0), min(cy + cut_h // 2, height)
        left, right = max(cx - cut_w // 2, 0), min(cx + cut_w // 2, width)
        mixed = x.clone()
        mixed[..., top:bottom, left:right] = x[perm][..., top:bottom, left:right]
        lam = 1.0 - (bottom - top) * (right - left) / float(height * width)
    else:
        mixed = lam * x + (1.0 - lam) * x[perm]
    return mixed, lam * targets + (1.0 - lam) * targets[perm]
