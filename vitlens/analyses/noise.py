"""Robustness to frequency-band noise: accuracy change vs noise frequency (Park & Kim 2022, Fig 2b).

Conventions (`--convention`):
  * paper (default), the authors' `ops/adversarial.py` `FreqAttack(Random(eps), f, s)`: noise
    eps * sign(randn) per pixel; fft2, rolled by (h/2, w/2); the amplitude kept only inside the square
    annulus between the centred squares of sides int((f + s) h / 2pi) * 2 and int((f - s) h / 2pi) * 2
    (each clipped to [0, h]), the phase kept; rolled back, inverse fft2, real part, added to the image.
    No rescaling, so the noise energy grows with the band's area. f and s in radians (s = 0.2).
    Square images of even size only (the authors' mask assumes both).
  * standard: Gaussian noise is restricted to a band of the centred 2D spectrum of the image: the ring of
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

from ..context import Context
from ..errors import VitlensError
from ..features import batch_input
from ..options import Option, convention_option
from ..result import Result
from . import Figure, Memory, Page, register_analysis
from ..metrics import Scores

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


def paper_band_mask(size: int, frequency: float, half_width: float) -> torch.Tensor:
    """The authors' square annulus, in the rolled (centred) spectrum of a SIZE x SIZE image."""
    def centred_square(side: int) -> torch.Tensor:
        side = min(max(side, 0), size)
        square = torch.zeros(size, size, dtype=torch.bool)
        pad = (size - side) // 2
        square[pad:pad + side, pad:pad + side] = True
        return square
    outer = centred_square(int((frequency + half_width) * size / (2 * math.pi)) * 2)
    inner = centred_square(int((frequency - half_width) * size / (2 * math.pi)) * 2)
    return outer & ~inner


def paper_band_noise(shape: Sequence[int], frequency: float, half_width: float, eps: float,
                     generator: torch.Generator | None = None) -> torch.Tensor:
    """`FreqAttack(Random(eps), f, s)` noise of SHAPE (B, C, H, W): see the module docstring."""
    b, c, h, w = shape
    if h != w or h % 2:
        raise VitlensError(f"the paper's noise band needs square images of even size, got {h}x{w}; "
                           "use --convention standard")
    noise = eps * torch.randn(tuple(shape), generator=generator, dtype=torch.float64).sign()
    spectrum = torch.roll(torch.fft.fft2(noise), shifts=(h // 2, w // 2), dims=(2, 3))
    spectrum = spectrum * paper_band_mask(h, frequency, half_width)  # amplitude masked, phase kept
    return torch.fft.ifft2(torch.roll(spectrum, shifts=(h // 2, w // 2), dims=(2, 3))).real.float()


def _noise_fn(convention: str, band_width: float, half_width: float, eps: float, norm: str):
    """(shape, frequency, generator) -> noise, for the chosen convention."""
    if convention == "paper":
        return lambda shape, f, g: paper_band_noise(shape, f, half_width, eps, g)
    return lambda shape, f, g: band_noise(shape, f, band_width, eps, g, norm)


@torch.no_grad()
def noise_scores(model: torch.nn.Module, loader: Iterable, frequencies: Sequence[float], *, band_width: float,
                 eps: float, seed: int = 0, device: torch.device | str = "cpu", norm: str = "l2",
                 progress=None, convention: str = "standard", half_width: float = 0.2) -> tuple[Scores, list[Scores]]:
    """(clean scores, [scores with band noise at each frequency]); frequencies and widths in radians."""
    make_noise = _noise_fn(convention, band_width, half_width, eps, norm)
    clean, noisy = Scores(), [Scores() for _ in frequencies]
    generators = [torch.Generator().manual_seed(int(seed)) for _ in frequencies]
    for batch in loader:
        x, labels = batch_input(batch)
        if labels is None:
            raise VitlensError("the noise study needs labelled data")
        x = x.to(device)
        clean.add(model(x), labels)
        for scores, f, generator in zip(noisy, frequencies, generators):
            noise = make_noise(x.shape, f, generator).to(device=x.device, dtype=x.dtype)
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
        points = [k / (count - 1) for k in range(count)] if count > 1 else [0.0]
    bad = [p for p in points if not 0.0 <= p <= 1.0]
    if bad or not points:
        raise VitlensError(f"noise frequencies must lie in [0, 1] (units of pi), got {bad or points}")
    return points


STANDARD = {"convention": ("standard",)}
OPTIONS = [
    convention_option("the authors' FreqAttack: eps*sign(randn), square annulus of half-width s, amplitude "
                      "masked, no rescaling", "Gaussian noise in a round (l2) or square (linf) band of --width, "
                      "each image rescaled to RMS eps"),
    Option("frequencies", int, 11, "how many frequencies evenly in [0, pi] (or a JSON list in units of pi)",
           low=1, high=256, list_of=float),
    Option("eps", float, 0.1, "noise amplitude (model-input units)", low=0.0, high=100.0),
    Option("s", float, 0.2, "paper: half-width of the square annulus, radians (the authors' s)", low=0.0, high=4.0,
           applies={"convention": ("paper",)}),
    Option("width", float, 0.1, "standard: band width in units of pi", low=1e-6, high=2.0, applies=STANDARD),
    Option("norm", str, "l2", "standard: round (l2) or square (linf) band", choices=NORMS, applies=STANDARD),
]


@register_analysis("noise", "accuracy change under random noise restricted to a frequency band, vs frequency "
                   "(Park & Kim Fig 2b); frequencies in units of pi", OPTIONS,
                   conventions="accuracy and NLL (per-sample mean) change vs the clean images; the same noise "
                               "draw for every frequency", lane="interactive",
                   page=Page("Noise robustness by frequency", "Noise_robustness", 6,
                             options=("convention", "frequencies", "eps", "s", "width", "norm"),
                             labels={"frequencies": "frequencies (count in [0, π])", "eps": "noise amplitude eps",
                                     "s": "band half-width s (radians)", "width": "band width (×π)"},
                             widget_args={"eps": {"step": 0.05}, "width": {"step": 0.01}},
                             caption=("Accuracy change when random noise restricted to a ring of the centred 2D "
                                      "spectrum (frequency f, width s, amplitude eps) is added to the images. The paper "
                                      "finds ViTs robust to high-frequency noise and ResNets vulnerable to it.")),
                   figures=[Figure("noise_curve")], memory=Memory(working=4))
def noise(ctx: Context, params: dict) -> Result:
    points = _frequencies(params["frequencies"])
    convention = params["convention"]
    band_width, eps, norm, half_width = params["width"] * math.pi, params["eps"], params["norm"], params["s"]
    x0 = batch_input(ctx.dataset[0])[0]
    for p in points:  # check every band against the image size before the long run
        if convention == "paper":
            paper_band_noise((1, *x0.shape[-3:]), p * math.pi, half_width, eps)
        else:
            band_mask(x0.shape[-2], x0.shape[-1], p * math.pi, band_width, norm)
    loader = ctx.loader()
    progress = ctx.progress(len(loader), "noise")
    clean, noisy = noise_scores(ctx.model, loader, [p * math.pi for p in points], band_width=band_width, eps=eps,
                                seed=ctx.spec.seed, device=ctx.device, norm=norm, progress=progress,
                                convention=convention, half_width=half_width)
    rows = [dict(frequency=p * math.pi, frequency_pi=p, convention=convention,
                 width_pi=params["width"] if convention == "standard" else 2 * half_width / math.pi, eps=eps,
                 norm=norm if convention == "standard" else "paper_square",
                 accuracy=s.accuracy, nll=s.nll, accuracy_change=s.accuracy - clean.accuracy,
                 nll_change=s.nll - clean.nll, clean_accuracy=clean.accuracy, clean_nll=clean.nll)
            for p, s in zip(points, noisy)]
    frame = pd.DataFrame(rows)
    worst = frame.loc[frame["accuracy_change"].idxmin()]
    summary = dict(clean_accuracy=clean.accuracy, clean_nll=clean.nll, samples=clean.count,
                   most_harmful_frequency_pi=float(worst["frequency_pi"]),
                   largest_accuracy_drop=float(-worst["accuracy_change"]))
    return Result(frame, {"analysis": "noise", "summary": summary})
