"""Stochastic trace estimators with a standard error: Hutchinson and Hutch++.

Hutchinson (1989): for Rademacher v (entries +-1), E[v^T H v] = tr(H); the mean of m samples is
unbiased with standard error std(samples) / sqrt(m). Its variance is 2(||H||_F^2 - sum_i H_ii^2)
per sample, large when a few eigenvalues dominate (neural-network Hessians: outliers over a bulk).

Hutch++ (Meyer, Musco, Musco & Woodruff 2021): take the top of the spectrum out exactly and run
Hutchinson only on the rest. With S random (s vectors), Q = orth(H S) captures H's dominant range;
tr(H) = tr(Q^T H Q) + tr((I - QQ^T) H (I - QQ^T)), the first term computed exactly (s products),
the second by Hutchinson with probes projected off Q. The standard error is that of the second
term (the first has none given Q). Cost: 2s + (number of residual probes) products.

Krylov-deflated Hutchinson (``krylov``; the Krylov-subspace variants of Hutch++ in Persson,
Cortinovis & Kressner 2022, "Improved variants of the Hutch++ algorithm", and Chen & Hallman 2023,
"Krylov-aware stochastic trace estimation"): Q is instead the orthonormal basis of s Lanczos steps
from one random start. Two gains over Hutch++ for the same s: the exact part is free, because
tr(Q^T H Q) = sum_j q_j^T H q_j = sum of Lanczos' alphas, already computed (s products, not 2s);
and a Krylov space captures the outlying eigenvalues at *both* ends (large positive and large
negative ones, as in ViT Hessians) far better than one power step range(H S) does. The residual
is Hutchinson on probes projected off Q, as in Hutch++; the probes are independent of Q, so the
estimate is unbiased.

Both stop at MAX_PROBES products or once the standard error is at most ``rtol * |estimate|`` (or
``atol``), whichever first. PyHessian's own test divides by the signed trace, so it stops after two
samples whenever the trace is negative; these tests use magnitudes.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

import torch

from ..errors import VitlensError
from .lanczos import lanczos


@dataclass
class TraceEstimate:
    estimator: str
    estimate: float
    stderr: float
    hvps: int
    samples: list[float] = field(default_factory=list)  # the per-probe quadratic forms (residual part for hutch++)
    exact_part: float = 0.0  # tr(Q^T H Q) for hutch++


def _rademacher(dim: int, generator: torch.Generator, dtype, device, count: int | None = None) -> torch.Tensor:
    shape = (dim,) if count is None else (count, dim)
    return (torch.randint(0, 2, shape, generator=generator).to(dtype) * 2 - 1).to(device)


def mean_stderr(values: list[float]) -> tuple[float, float]:
    m = len(values)
    mean = sum(values) / m
    if m < 2:
        return mean, math.inf
    var = sum((v - mean) ** 2 for v in values) / (m - 1)
    return mean, math.sqrt(var / m)


def _done(estimate: float, stderr: float, rtol: float, atol: float) -> bool:
    return stderr <= max(rtol * abs(estimate), atol)


def hutchinson(matvec: Callable[[torch.Tensor], torch.Tensor], dim: int, max_probes: int = 100,
               rtol: float = 0.0, atol: float = 0.0, min_probes: int = 3, generator: torch.Generator | None = None,
               dtype=torch.float32, device="cpu") -> TraceEstimate:
    """tr(H) by Hutchinson's estimator with Rademacher probes (Hutchinson 1989)."""
    if max_probes < 2:
        raise VitlensError(f"the trace needs at least 2 probes for a standard error, got {max_probes}")
    generator = generator or torch.Generator().manual_seed(0)
    nothing = torch.zeros(0, dim, dtype=dtype, device=device)  # no deflation: plain Hutchinson
    return _deflated("hutchinson", matvec, Q=nothing, exact=0.0, hvps=0, max_probes=max_probes, rtol=rtol, atol=atol,
                     min_probes=min_probes, generator=generator)


def hutchpp(matvec: Callable[[torch.Tensor], torch.Tensor], dim: int, max_probes: int = 100,
            sketch: int | None = None, rtol: float = 0.0, atol: float = 0.0, min_probes: int = 3,
            matmat: Callable[[torch.Tensor], torch.Tensor] | None = None, generator: torch.Generator | None = None,
            dtype=torch.float32, device="cpu") -> TraceEstimate:
    """tr(H) by Hutch++ (Meyer et al. 2021): exact trace on a sketched top subspace + Hutchinson on the rest.

    SKETCH vectors (default: a third of MAX_PROBES, as in the paper's split) build Q; the rest of
    the budget goes to residual probes (at least `min_probes`).
    """
    if max_probes < 2:
        raise VitlensError(f"the trace needs at least 2 probes for a standard error, got {max_probes}")
    generator = generator or torch.Generator().manual_seed(0)
    matmat = matmat or (lambda V: torch.stack([matvec(v) for v in V]))
    s = int(sketch) if sketch is not None else max(1, int(max_probes) // 3)
    s = min(s, dim)
    S = _rademacher(dim, generator, dtype, device, count=s)
    Q = torch.linalg.qr(matmat(S).T.to(torch.float64)).Q.T.to(dtype)  # (s, dim) orthonormal rows: range(H S)
    exact = torch.sum(Q * matmat(Q)).item()  # tr(Q^T H Q)
    return _deflated("hutchpp", matvec, Q=Q, exact=exact, hvps=2 * s, max_probes=max_probes, rtol=rtol, atol=atol,
                     min_probes=min_probes, generator=generator)


def krylov_deflated(matvec: Callable[[torch.Tensor], torch.Tensor], dim: int, max_probes: int = 100,
                    sketch: int | None = None, rtol: float = 0.0, atol: float = 0.0, min_probes: int = 3,
                    generator: torch.Generator | None = None, dtype=torch.float32, device="cpu") -> TraceEstimate:
    """tr(H) = tr(Q^T H Q) exactly on a SKETCH-step Lanczos basis Q + Hutchinson on the rest (see above).

    SKETCH Lanczos steps (default: a third of MAX_PROBES) build Q; the rest of the budget goes to
    residual probes (at least `min_probes`), which stop early at the RTOL/ATOL standard error.
    """
    if max_probes < 2:
        raise VitlensError(f"the trace needs at least 2 probes for a standard error, got {max_probes}")
    generator = generator or torch.Generator().manual_seed(0)
    s = int(sketch) if sketch is not None else max(1, int(max_probes) // 3)
    tri = lanczos(matvec, _rademacher(dim, generator, dtype, device), min(s, dim))
    exact = float(sum(tri.alpha))  # tr(Q^T H Q): alpha_j = q_j^T H q_j
    return _deflated("krylov", matvec, Q=tri.basis, exact=exact, hvps=tri.hvps, max_probes=max_probes, rtol=rtol,
                     atol=atol, min_probes=min_probes, generator=generator)


def _deflated(name: str, matvec, *, Q: torch.Tensor, exact: float, hvps: int, max_probes: int, rtol: float,
              atol: float, min_probes: int, generator: torch.Generator) -> TraceEstimate:
    """EXACT = tr(Q^T H Q) (HVPS products spent) + Hutchinson on probes projected off Q's rows."""
    dim = Q.shape[1]
    samples: list[float] = []
    estimate, stderr = exact, 0.0
    if len(Q) < dim:
        for i in range(max(int(max_probes) - hvps, int(min_probes))):
            g = _rademacher(dim, generator, Q.dtype, Q.device)
            for _ in range(2):  # twice: Q is orthonormal only to float precision
                g = g - Q.T @ (Q @ g)
            samples.append(torch.dot(g, matvec(g)).item())
            hvps += 1
            rest, stderr = mean_stderr(samples)
            estimate = exact + rest
            if i + 1 >= max(min_probes, 2) and (rtol or atol) and _done(estimate, stderr, rtol, atol):
                break
    return TraceEstimate(name, estimate, stderr, hvps, samples, exact)
