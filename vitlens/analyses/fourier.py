"""Fourier analysis of feature maps: relative log amplitude vs frequency for every block.

Park & Kim 2022, Fig 2a and Fig 8 ("MSAs are low-pass filters, Convs are high-pass filters"). For each
block's output feature map (B, C, n, n) (ViT tokens as an n x n grid, class tokens dropped):

    A = mean over batch and channels of log |fft2(map)|          (an n x n map, centred by fftshift)
    a(k) = A at offset (k, k) from the centre, k = 0 .. n//2      (the half-diagonal)
    relative log amplitude(k) = a(k) - a(0)

Offset k is the spatial frequency omega_k = 2 pi k / n along each axis.

Conventions (`--convention`):
  * paper (default): the authors' `fourier_analysis.ipynb` rolls the map by (n/2, n/2) and keeps
    `diag()[n//2:]`, i.e. offsets k = 0 .. n - n//2 - 1 (for even n: up to n/2 - 1, one short of the
    Nyquist corner). Their plots label the last point 1.0 pi; its true frequency is (n/2-1)/(n/2) pi.
    The `paper_axis_pi` column holds their label, `frequency` the true value.
  * standard: k = 0 .. n//2, so for even n the half-diagonal reaches pi (the wrap-around corner).
Fig 8 plots the value at the highest frequency vs normalised depth: `vitlens.frames.high_frequency`.

The mean log amplitude is streamed (a running sum per block over batches). Only the half-diagonal
entries F(k, k) are computed (one matrix product with a DFT basis; see `FourierReducer`); the full
centred map is available with `FourierReducer(full=True)` (rfft2: the input is real, so
|F(-u)| = |F(u)| and the half plane holds every value).
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import torch

from ..context import Context
from ..errors import VitlensError
from ..features import Reducer, RunningSum, block_table, skipped_maps
from ..frames import high_frequency
from ..options import Option, convention_option
from ..result import Result
from . import Figure, Memory, Page, register_analysis

# log(|F| + floor): exact zeros (dead ReLU channels) stay finite.
LOG_FLOOR = 1e-6
# Maps up to this size get their half-diagonal from one matrix product with a DFT basis.
MATMUL_DFT_MAX = 64


def diagonal_dft_basis(n: int, device, dtype=torch.float32) -> torch.Tensor:
    """(n*n, 2*(n//2+1)) real matrix: a flattened n x n map times it gives Re and Im of F(k, k),
    k = 0..n//2, the diagonal of its 2D DFT: F(k, k) = sum_{y,x} f(y, x) exp(-2 pi i k (y + x) / n)."""
    k = torch.arange(n // 2 + 1, dtype=torch.float64)
    s = torch.arange(n, dtype=torch.float64)
    phase = 2 * math.pi * torch.outer((s.view(-1, 1) + s.view(1, -1)).flatten() % n, k) / n
    return torch.cat([torch.cos(phase), -torch.sin(phase)], dim=1).to(device=device, dtype=dtype)


class FourierReducer(Reducer):
    """Running sum of log |DFT| over batch and channels, per block with a feature map.

    By default only the half-diagonal F(k, k) is computed, as one matrix product with a DFT basis
    (`diagonal_dft_basis`: O(n^3) per map but a single BLAS call, cheaper than a full FFT for maps up
    to MATMUL_DFT_MAX; larger maps use rfft2); `full=True` keeps the whole mean log amplitude map (via rfft2) for `spectrum`."""

    def __init__(self, floor: float = LOG_FLOOR, full: bool = False):
        self.floor = floor
        self.full = full
        self.sums = RunningSum()
        self.too_small: dict[int, tuple[int, int]] = {}
        self.sizes: dict[int, int] = {}
        self._bases: dict[tuple, torch.Tensor] = {}

    def update(self, index, block, output, fmap):
        if fmap is None:
            return
        b, c, h, w = fmap.shape
        if h < 2 or w < 2:  # a 1x1 map has only the DC component
            self.too_small[index] = (h, w)
            return
        if h != w:
            raise VitlensError(f"block {block.name}: the Fourier half-diagonal needs square feature maps, "
                               f"got {h}x{w}")
        if self.full:
            spectrum = torch.fft.rfft2(fmap.float()).abs()
        elif h > MATMUL_DFT_MAX:  # large maps: an FFT beats the O(n^3) product
            k = torch.arange(h // 2 + 1, device=fmap.device)
            spectrum = torch.fft.rfft2(fmap.float())[..., k, k].abs()
        else:
            key = (h, fmap.device)
            if key not in self._bases:
                self._bases[key] = diagonal_dft_basis(h, fmap.device)
            parts = fmap.float().reshape(b * c, h * w) @ self._bases[key]
            spectrum = torch.complex(*parts.chunk(2, dim=1)).abs()  # (B*C, n//2 + 1)
        log_amplitude = spectrum.add_(self.floor).log_().reshape(b * c, *spectrum.shape[-2 if self.full else -1:])
        self.sums.add(index, log_amplitude.sum(dim=0, dtype=self.dtype), b * c)
        self.sizes[index] = h

    def indices(self) -> list[int]:
        return sorted(self.sums.sums)

    def half_spectrum(self, index: int) -> torch.Tensor:
        """Mean log amplitude over the rfft2 half plane, (n, n//2 + 1), float64 on the CPU (`full=True`)."""
        if not self.full:
            raise VitlensError("the full spectrum needs FourierReducer(full=True)")
        return self.sums.mean(index)

    def spectrum(self, index: int) -> torch.Tensor:
        """The full centred (fftshift-ed) mean log amplitude map, (n, n) (`full=True`)."""
        half = self.half_spectrum(index)
        n = half.shape[0]
        ys = torch.arange(n).view(-1, 1).expand(n, n)
        xs = torch.arange(n).view(1, -1).expand(n, n)
        mirrored = xs > n // 2  # conjugate symmetry: |F(y, x)| = |F(-y, -x)|
        full = half[torch.where(mirrored, (-ys) % n, ys), torch.where(mirrored, (-xs) % n, xs)]
        return torch.fft.fftshift(full)

    def curve(self, index: int, convention: str = "paper") -> tuple[np.ndarray, np.ndarray]:
        """(frequencies in radians, mean log amplitude) along the half-diagonal, offsets
        k = 0 .. `half_diagonal_length(n, convention)` - 1."""
        n = self.sizes[index]
        k = np.arange(half_diagonal_length(n, convention))
        mean = self.sums.mean(index)
        values = mean[k, k].numpy() if self.full else mean.numpy()[: len(k)]
        return 2 * math.pi * k / n, values


def half_diagonal_length(n: int, convention: str = "paper") -> int:
    """How many half-diagonal offsets an n x n map gives: the authors' `diag()[n//2:]` after the roll
    holds n - n//2 (paper); `standard` goes up to n//2 (Nyquist for even n)."""
    return n - n // 2 if convention == "paper" else n // 2 + 1


def half_diagonal(log_amplitude_map: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(frequencies, values) on the half-diagonal of a *centred* n x n map, from the centre outwards
    (offset k at index (n//2 + k) mod n, so for even n the last point is the wrapped Nyquist corner)."""
    n = log_amplitude_map.shape[0]
    k = np.arange(n // 2 + 1)
    idx = (n // 2 + k) % n
    return 2 * math.pi * k / n, log_amplitude_map[idx, idx]


def fourier_frame(reducer: FourierReducer, block_list, resolution: int = 0, convention: str = "paper") -> pd.DataFrame:
    """Long-format rows: block, name, kind, stage, depth, size, frequency, frequency_pi,
    paper_axis_pi, log_amplitude, relative_log_amplitude. RESOLUTION > 0 resamples every curve (linearly) onto that
    many evenly spaced frequencies in [0, pi], so models with different map sizes share a grid (an
    odd-sized map, whose half-diagonal stops short of pi, keeps the grid points it reaches); a map
    with fewer native frequencies than RESOLUTION is an error rather than invented detail."""
    table = block_table(block_list)
    rows = []
    for i in reducer.indices():
        freqs, values = reducer.curve(i, convention)
        n = reducer.sizes[i]
        if resolution:
            if len(freqs) < resolution:
                raise VitlensError(
                    f"block {block_list[i].name}: its {n}x{n} feature map resolves only {len(freqs)} frequencies "
                    f"in [0, pi], fewer than resolution={resolution}; use --resolution {len(freqs)} or less "
                    "(0 keeps each block's own frequencies)")
            grid = np.linspace(0.0, math.pi, resolution)
            grid = grid[grid <= freqs[-1] + 1e-12]  # odd n stops short of pi: no extrapolation
            values = np.interp(grid, freqs, values)
            freqs = grid
        relative = values - values[0]
        labels = np.linspace(0.0, 1.0, len(freqs)) if len(freqs) > 1 else np.zeros(1)  # the authors' axis
        for f, label, v, r in zip(freqs, labels, values, relative):
            rows.append(dict(table[i], size=n, frequency=float(f), frequency_pi=float(f / math.pi),
                             paper_axis_pi=float(label), log_amplitude=float(v), relative_log_amplitude=float(r)))
    columns = ["block", "name", "kind", "stage", "depth", "size", "frequency", "frequency_pi", "paper_axis_pi",
               "log_amplitude", "relative_log_amplitude"]
    return pd.DataFrame(rows, columns=columns)


OPTIONS = [
    convention_option("the authors' half-diagonal, offsets 0 .. n/2-1 (stops one short of Nyquist)",
                      "offsets 0 .. n/2 (reaches pi for even n)"),
    Option("resolution", int, 0, "resample every curve onto this many frequencies in [0, pi] (0 = each block's own)",
           low=0, high=4096),
]


@register_analysis("fourier", "relative log amplitude of Fourier-transformed feature maps vs frequency, per block "
                   "(Park & Kim Fig 2a/8)", OPTIONS,
                   conventions="log(|fft2| + 1e-6), mean over images and channels, half-diagonal minus its k=0 value",
                   lane="interactive",
                   page=Page("Fourier analysis of feature maps", "Fourier", 3, options=("convention", "resolution"),
                             caption=("Relative log amplitude of the Fourier-transformed feature map of every block: "
                                      "log|FFT| averaged over images and channels, along the half-diagonal from "
                                      "frequency 0 to π, minus its value at 0. The paper finds that MSAs (blue bands) "
                                      "reduce high-frequency amplitude — they act like low-pass filters — while "
                                      "convolutions amplify it.")),
                   figures=[Figure("fourier_curves"), Figure("fourier_high_frequency")],
                   memory=Memory(working=6))  # the widest map, its complex FFT and log amplitude
def fourier(ctx: Context, params: dict) -> Result:
    resolution = params["resolution"]
    if resolution == 1:
        raise VitlensError(f"resolution must be 0 (each block's own frequencies) or at least 2, got {resolution}")
    reducer = FourierReducer()
    block_list = ctx.collect(reducer, "fourier")
    if not reducer.indices():
        raise VitlensError("no block has a feature map of at least 2x2: nothing to Fourier-transform")
    frame = fourier_frame(reducer, block_list, resolution, params["convention"])
    high = high_frequency(frame)
    summary = dict(high_frequency={r["name"]: r["relative_log_amplitude"] for r in high.to_dict("records")},
                   skipped=skipped_maps(reducer.too_small, block_list))
    return Result(frame, {"analysis": "fourier", "summary": summary})
