"""Eigenvalue density by stochastic Lanczos quadrature (SLQ).

Lin, Saad & Yang (2016) and Ghorbani, Krishnan & Xiao (2019): the spectral density
phi(t) = (1/n) sum_i delta(t - lambda_i) is estimated as follows. For a random unit vector v
(Rademacher / sqrt(n)), m Lanczos steps from v give a tridiagonal T with eigenpairs (theta_j, s_j);
the nodes theta_j with weights tau_j = s_j[0]^2 are an m-point Gauss quadrature of the measure
sum_i (v . u_i)^2 delta(t - lambda_i), whose expectation is phi. So

    sum_j tau_j f(theta_j) ~= (1/n) tr f(H)   (exact in v for polynomials f of degree < 2m),

averaged over several runs. The density replaces each node by a Gaussian of width sigma
(broadening). Moments check the estimate: sum tau theta ~= tr(H)/n, sum tau theta^2 ~= ||H||_F^2/n.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch

from .lanczos import lanczos


@dataclass
class Density:
    grid: torch.Tensor  # (points,) float64
    density: torch.Tensor  # (points,) float64, integrates to ~1
    nodes: list[torch.Tensor]  # per run: Ritz values theta_j (float64)
    weights: list[torch.Tensor]  # per run: quadrature weights tau_j (sum to 1)
    sigma: float
    hvps: int

    def moment(self, power: int) -> tuple[float, float]:
        """Mean over runs of sum_j tau_j theta_j^power, and its standard error over runs."""
        values = [float(torch.sum(w * t ** power)) for t, w in zip(self.nodes, self.weights)]
        mean = sum(values) / len(values)
        if len(values) < 2:
            return mean, math.inf
        var = sum((v - mean) ** 2 for v in values) / (len(values) - 1)
        return mean, math.sqrt(var / len(values))


def slq(matvec: Callable[[torch.Tensor], torch.Tensor], dim: int, *, runs: int = 5, steps: int = 80,
        points: int = 1000, sigma: float | None = None, sigma_fraction: float = 0.01,
        generator: torch.Generator | None = None, dtype=torch.float32, device="cpu") -> Density:
    """SLQ density with RUNS Rademacher starts of STEPS Lanczos steps each, broadened by SIGMA.

    SIGMA defaults to ``sigma_fraction`` times the width of the spectrum the nodes span. The grid
    spans the nodes plus 5 sigma on both sides.
    """
    generator = generator or torch.Generator().manual_seed(0)
    nodes, weights, hvps = [], [], 0
    for _ in range(int(runs)):
        v = (torch.randint(0, 2, (dim,), generator=generator).to(dtype) * 2 - 1).to(device)
        tri = lanczos(matvec, v, steps)
        hvps += tri.hvps
        theta, S = tri.ritz()
        nodes.append(theta)
        weights.append(S[0, :] ** 2)
    low = min(float(t.min()) for t in nodes)
    high = max(float(t.max()) for t in nodes)
    if sigma is None:
        sigma = sigma_fraction * max(high - low, 1e-12 * max(abs(high), abs(low), 1.0))
    grid = torch.linspace(low - 5 * sigma, high + 5 * sigma, int(points), dtype=torch.float64)
    density = torch.zeros_like(grid)
    for theta, tau in zip(nodes, weights):
        gauss = torch.exp(-0.5 * ((grid[:, None] - theta[None, :]) / sigma) ** 2) / (sigma * math.sqrt(2 * math.pi))
        density += gauss @ tau
    density /= len(nodes)
    return Density(grid, density, nodes, weights, float(sigma), hvps)
