"""Robustness to frequency-band noise: accuracy change vs noise frequency (Park & Kim 2022, Fig 2b).

Gaussian noise is restricted to a band of the centred 2D spectrum of the image: the ring of
frequencies whose radius r lies within width/2 of f, for f in [0, pi]. Frequencies are angular,
omega = 2 pi k / n per axis (so pi is the Nyquist frequency), and the radius is Euclidean,
r = sqrt(omega_y^2 + omega_x^2) (norm "l2": a round ring; the corners beyond pi are never hit), or
r = max(|omega_y|, |omega_x|) (norm "linf": a square ring, whose radius-f points include the diagonal
point (f, f) that the Fourier analysis plots at f). The noise is then scaled so that each image's root
mean square over channels and pixels is eps, in normalised pixel units (the units of the model input).

Seeded: each frequency draws the same Gaussian noise before filtering (common random numbers: the
curve over f compares bands, not draws), from a generator seeded with the job's seed.
"""
from __future__ import annotations

import math
from typing import Iterable, Sequence

import pandas as pd
import torch

from ..errors import VitlensError
from ..features import batch_input
from ..result import Result
from . import Context, register_analysis
from .evaluate import Scores

NORMS = ("l2", "linf")


def frequency_radius(height: int, width: int, norm: str = "l2") -> torch.Tensor:
    """Radius of every frequency of an HxW image in the (unshifted) fft2 layout, radians in [0, pi*sqrt2]."""
    if norm not in NORMS:
        raise VitlensError(f"norm must be one of {NORMS}, got {norm!r}")
    wy = (2 * math.pi * torch.fft.fftfreq(height, dtype=torch.float64)).abs().view(-1, 1)
    wx = (2 * math.pi * torch.fft.fftfreq(width, dtype=torch.float64)).abs().view(1, -1)
    return torch.hypot(wy, wx) if norm == "l2" else torch.maximum(wy, wx)


def band_mask(height: int, width: int, frequency: float, band_width: float, norm: str = "l2") -> torch.Tensor:
    """Boolean (H, W) mask, fft2 layout (`torch.fft.fftshift` centres it): |radius - f| <= width / 2.

    The mask is symmetric under omega -> -omega, so filtered real noise stays real."""
    if not 0.0 <= frequency <= math.pi + 1e-9:
        raise VitlensError(f"noise frequency must be in [0, pi], got {frequency / math.pi:.3g} pi")
    if band_width <= 0:
        raise VitlensError(f"band width must be positive, got {band_width / math.pi:.3g} pi")
    mask = (frequency_radius(height, width, norm) - frequency).abs() <= band_width / 2 + 1e-12
    if not mask.any():
        raise VitlensError(f"the band {frequency / math.pi:.3g} pi +- {band_width / 2 / math.pi:.3g} pi holds no "
                           f"frequency of a {height}x{width} image; widen the band (--width)")
    return mask


def band_noise(shape: Sequence[int], frequency: float, band_width: float, eps: float,
               generator: torch.Generator | None = None, norm: str = "l2") -> torch.Tensor:
    """Gaussian noise of SHAPE (B, C, H, W) with its spectrum restricted to the band, each image
    scaled to root mean square EPS."""
    b, c, h, w = shape
    mask = band_mask(h, w, frequency, band_width, norm)
    white = torch.randn(tuple(shape), generator=generator, dtype=torch.float64)
    banded = torch.fft.ifft2(torch.fft.fft2(white) * mask).real
    rms = banded.pow(2).mean(dim=(1, 2, 3), keepdim=True).sqrt().clamp_min(1e-30)
    return (banded * (eps / rms)).float()


@torch.no_grad()
def noise_scores(model: torch.nn.Module, loader: Iterable, frequencies: Sequence[float], band_width: float,
                 eps: float, seed: int = 0, device: torch.device | str = "cpu", norm: str = "l2",
                 progress=None) -> tuple[Scores, list[Scores]]:
    """(clean scores, [scores with band noise at each frequency]); frequencies and width in radians."""
    clean, noisy = Scores(), [Scores() for _ in frequencies]
    generators = [torch.Generator().manual_seed(int(seed)) for _ in frequencies]
    for batch in loader:
        x, labels = batch_input(batch)
        if labels is None:
            raise VitlensError("the noise study needs labelled data")
        x = x.to(device)
        clean.add(model(x), labels)
        for scores, f, generator in zip(noisy, frequencies, generators):
            noise = band_noise(x.shape, f, band_width, eps, generator, norm).to(device=x.device, dtype=x.dtype)
            scores.add(model(x + noise), labels)
        if progress is not None:
            progress.update(1)
    return clean, noisy


def _frequencies(value) -> list[float]:
    """`frequencies` option: a count of evenly spaced points on [0, 1], or a list, in units of pi."""
    if isinstance(value, (list, tuple)):
        points = [float(v) for v in value]
    else:
        count = int(value)
        if count < 1:
            raise VitlensError(f"frequencies must be a positive count or a list in units of pi, got {value}")
        points = [k / (count - 1) for k in range(count)] if count > 1 else [0.0]
    bad = [p for p in points if not 0.0 <= p <= 1.0]
    if bad or not points:
        raise VitlensError(f"noise frequencies must lie in [0, 1] (units of pi), got {bad or points}")
    return points


@register_analysis("noise", "accuracy change under random noise restricted to a frequency band, vs frequency "
                   "(Park & Kim Fig 2b); frequencies and width in units of pi",
                   defaults={"frequencies": 11, "width": 0.1, "eps": 0.1, "norm": "l2"})
def noise(ctx: Context, params: dict) -> Result:
    points = _frequencies(params["frequencies"])
    band_width, eps, norm = float(params["width"]) * math.pi, float(params["eps"]), str(params["norm"])
    if eps < 0:
        raise VitlensError(f"eps must be non-negative, got {eps}")
    x0 = batch_input(ctx.dataset[0])[0]
    for p in points:  # check every band against the image size before the long run
        band_mask(x0.shape[-2], x0.shape[-1], p * math.pi, band_width, norm)
    loader = ctx.loader()
    progress = ctx.progress(len(loader), "noise")
    clean, noisy = noise_scores(ctx.model, loader, [p * math.pi for p in points], band_width, eps,
                                ctx.spec.seed, ctx.device, norm, progress)
    rows = [dict(frequency=p * math.pi, frequency_pi=p, width_pi=float(params["width"]), eps=eps, norm=norm,
                 accuracy=s.accuracy, nll=s.nll, accuracy_change=s.accuracy - clean.accuracy,
                 nll_change=s.nll - clean.nll, clean_accuracy=clean.accuracy, clean_nll=clean.nll)
            for p, s in zip(points, noisy)]
    frame = pd.DataFrame(rows)
    worst = frame.loc[frame["accuracy_change"].idxmin()]
    summary = dict(clean_accuracy=clean.accuracy, clean_nll=clean.nll, samples=clean.count,
                   most_harmful_frequency_pi=float(worst["frequency_pi"]),
                   largest_accuracy_drop=float(-worst["accuracy_change"]))
    return Result(frame, {"analysis": "noise", "summary": summary})
