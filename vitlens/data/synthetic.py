"""`synthetic[:classes=K,n=N,noise=S]`: oriented sine gratings, one orientation/frequency per class."""
from __future__ import annotations

import math

import torch

from ..errors import VitlensError
from .datasets import SPLITS, ImageTensorDataset, subset_indices

# A fixed seed that does not depend on the user's seed: the images never change.
SYNTHETIC_SEED = 20220214
SYNTHETIC_DEFAULTS = {"classes": 10, "n": 512, "noise": 0.25}
SYNTHETIC_NATIVE_SIZE = 32


def _synthetic_params(arg: str) -> dict:
    """'classes=K,n=N,noise=S' (any of them, any order) -> the checked options with the defaults."""
    params = dict(SYNTHETIC_DEFAULTS)
    for item in filter(None, (p.strip() for p in arg.split(","))):
        key, _, value = item.partition("=")
        key = key.strip().lower()
        if key not in params:
            raise VitlensError(f"unknown synthetic option {key!r}; use synthetic:classes=K,n=N,noise=S")
        try:
            params[key] = type(SYNTHETIC_DEFAULTS[key])(value)
        except ValueError:
            raise VitlensError(f"synthetic option {key} needs a number, got {value!r}") from None
    if not 2 <= params["classes"] <= 100:
        raise VitlensError(f"synthetic classes must be 2..100, got {params['classes']}")
    if not 1 <= params["n"] <= 200_000:
        raise VitlensError(f"synthetic n (images per split) must be 1..200000, got {params['n']}")
    if not 0 <= params["noise"] <= 10:
        raise VitlensError(f"synthetic noise must be 0..10, got {params['noise']}")
    return params


def synthetic_images(classes: int, n: int, noise: float, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Oriented sine gratings (N, 1, 32, 32) in [0, 1] and their labels, the same on every call.

    Class k gets one orientation out of ceil(sqrt(K)) and one spatial frequency between 2 and 12
    cycles per image; each image has a random phase, contrast, a little orientation/frequency
    jitter and Gaussian pixel noise. Train and test use different random draws.
    """
    generator = torch.Generator().manual_seed(SYNTHETIC_SEED + SPLITS.index(split))
    labels = (torch.arange(n) % classes)[torch.randperm(n, generator=generator)]
    n_orient = math.ceil(math.sqrt(classes))
    n_freq = math.ceil(classes / n_orient)
    freqs = torch.linspace(2.0, 12.0, n_freq) if n_freq > 1 else torch.tensor([4.0])

    def uniform(low, high):
        return low + (high - low) * torch.rand(n, generator=generator)

    theta = math.pi * (labels % n_orient).float() / n_orient
    theta = theta + uniform(-0.15, 0.15) * math.pi / n_orient
    freq = freqs[labels // n_orient] * uniform(0.93, 1.07)
    phase = uniform(0.0, 2 * math.pi)
    contrast = uniform(0.6, 1.0)

    coords = torch.arange(SYNTHETIC_NATIVE_SIZE).float() / SYNTHETIC_NATIVE_SIZE
    yy, xx = torch.meshgrid(coords, coords, indexing="ij")
    along = xx * torch.cos(theta).view(-1, 1, 1) + yy * torch.sin(theta).view(-1, 1, 1)
    wave = torch.cos(2 * math.pi * freq.view(-1, 1, 1) * along + phase.view(-1, 1, 1))
    images = 0.5 + 0.4 * contrast.view(-1, 1, 1) * wave
    images = images + noise * 0.5 * torch.randn(images.shape, generator=generator)
    return images.clamp(0, 1).unsqueeze(1), labels


def load(arg, split, cfg, augment, samples, seed) -> ImageTensorDataset:
    params = _synthetic_params(arg)
    images, labels = synthetic_images(params["classes"], params["n"], params["noise"], split)
    keep = subset_indices(len(labels), samples, seed)
    spec = "synthetic:" + ",".join(f"{k}={params[k]}" for k in ("classes", "n", "noise"))
    return ImageTensorDataset(images[keep], labels[keep], cfg, spec=spec, split=split,
                              classes=[f"grating{k}" for k in range(params["classes"])],
                              num_classes=params["classes"], augment=augment, seed=seed)
