"""Lanczos with full reorthogonalisation, and top-k eigenpairs (by magnitude, sign kept) from it.

Lanczos (Golub & Van Loan, "Matrix Computations", Alg. 10.1.1; Paige 1972/1980 on its finite
precision behaviour): from a unit start vector q_1 build an orthonormal basis Q of the Krylov space
span{q, Hq, H^2 q, ...} in which H is tridiagonal, T = Q^T H Q (alpha on the diagonal, beta beside
it). Every new vector is orthogonalised again against all earlier ones (twice: "twice is enough",
Giraud et al. 2005), which keeps Q orthonormal so no spurious copies of converged eigenvalues
appear. The eigenpairs (theta, s) of T give Ritz pairs (theta, Q s); the residual of a Ritz pair is
``||H Q s - theta Q s|| = beta_m |s_m|`` (Paige), which is the stopping test.

Extreme eigenvalues at both ends converge first, so the largest-magnitude ones (positive or
negative) come out in few products; PyHessian's power iteration with deflation only finds the
largest-magnitude one at a time and stalls when two are close.

Stopping (`error_bounds`): each top-k Ritz value theta with residual norm r has an eigenvalue within
r of it, and, when the rest of the spectrum is at least `gap` away from theta (gap > r), the one
eigenvalue in that window is within r^2 / gap of theta (Kato-Temple; Parlett, "The Symmetric
Eigenvalue Problem", SIAM 1998, ch. 11; Bai et al., "Templates for the Solution of Algebraic
Eigenvalue Problems", 2000, Sec. 4.8, eq. 4.55). The gap is estimated from the other Ritz values,
each moved towards theta by its own residual. The run stops when the tighter bound is under
tol * |theta| for every top-k pair: where the eigenvalues are well separated
the quadratic bound is met a step or two before r itself (bound="residual" keeps the r-only rule).

What neither bound sees: an eigenvalue the Krylov space has not found yet (a small component in the
start vector). The gap estimate trusts the unconverged Ritz values next to the k-th one, and that is
where the saved steps come from; stopping earlier also gives a missing eigenvalue less time to
appear. benchmarks/bench_lanczos_stop.py replays both rules on recorded runs of real Hessians
(demo models, batches of 4-64, k = 1, 2, 5): the gap rule used 7.3 products against 8.7 and returned
a top-k set with some eigenvalue off by more than tol in 11 of 144 runs, against 2 of 144 (8 of the
11 with k = 5, where eigenvalues crowd; most are a missed eigenvalue, a few a bound just over tol).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch

from ..errors import VitlensError


@dataclass
class Tridiagonal:
    """What `lanczos` returns: T's diagonal (alpha) and off-diagonal (beta), and the basis rows Q."""

    alpha: list[float] = field(default_factory=list)
    beta: list[float] = field(default_factory=list)  # beta[j] couples q_j and q_{j+1}; last = residual norm
    basis: torch.Tensor | None = None  # (m, dim) orthonormal rows
    hvps: int = 0

    def matrix(self) -> torch.Tensor:
        m = len(self.alpha)
        T = torch.diag(torch.tensor(self.alpha, dtype=torch.float64))
        if m > 1:
            off = torch.tensor(self.beta[:m - 1], dtype=torch.float64)
            T += torch.diag(off, 1) + torch.diag(off, -1)
        return T

    def ritz(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Ritz values (ascending) and T's eigenvectors (columns), float64."""
        return torch.linalg.eigh(self.matrix())


def lanczos(matvec: Callable[[torch.Tensor], torch.Tensor], start: torch.Tensor, steps: int,
            stop: Callable[[Tridiagonal], bool] | None = None) -> Tridiagonal:
    """At most STEPS Lanczos steps from START; ``stop(tri)`` after each step may end early.

    Ends early also when the Krylov space is exhausted (beta ~ 0): then T's eigenvalues are exact
    eigenvalues of H.
    """
    return lanczos_stacked(lambda V, rows: matvec(V[0])[None], start[None], steps, stop)[0]


def lanczos_stacked(matmat: Callable[[torch.Tensor, list[int]], torch.Tensor], starts: torch.Tensor, steps: int,
                    stop: Callable[[Tridiagonal], bool] | None = None) -> list[Tridiagonal]:
    """M independent Lanczos runs in lockstep, one per row of STARTS (M, dim).

    ``matmat(V, rows)`` applies problem ``rows[i]``'s matrix to ``V[i]`` for the problems still
    running (one batched product per step, e.g. one vmap over several minibatches' Hessians); a
    problem leaves the batch when ``stop`` says so or its Krylov space is exhausted.
    """
    M, dim = starts.shape
    steps = min(int(steps), dim)
    # The basis grows as needed (doubling): most runs stop long before STEPS, and STEPS x dim floats
    # up front would be gigabytes for a ResNet-18 (100 x 11M x 4 bytes).
    Q = torch.zeros(M, min(steps, 16), dim, dtype=starts.dtype, device=starts.device)
    Q[:, 0] = starts / torch.linalg.vector_norm(starts, dim=1, keepdim=True)
    outs = [Tridiagonal() for _ in range(M)]
    scale = [0.0] * M
    active = list(range(M))
    for j in range(steps):
        if j + 1 < steps and j + 1 >= Q.shape[1]:
            Q = torch.cat([Q, torch.zeros_like(Q[:, :min(Q.shape[1], steps - Q.shape[1])])], dim=1)
            for m, out in enumerate(outs):
                out.basis = Q[m, :len(out.alpha)]
        W = matmat(Q[active, j], active)
        still = []
        for w, m in zip(W, active):
            out, q = outs[m], Q[m]
            out.hvps += 1
            alpha = torch.dot(q[j], w)
            w = w - alpha * q[j]
            if j > 0:
                w = w - out.beta[j - 1] * q[j - 1]
            for _ in range(2):  # full reorthogonalisation against every basis vector, twice
                w = w - q[:j + 1].T @ (q[:j + 1] @ w)
            beta = torch.linalg.vector_norm(w).item()
            out.alpha.append(alpha.item())
            out.beta.append(beta)
            scale[m] = max(scale[m], abs(alpha.item()), beta)
            done = beta <= 1e-10 * max(scale[m], 1e-30) or j + 1 == steps
            if not done:
                q[j + 1] = w / beta
            out.basis = q[:j + 1]
            if not (done or (stop is not None and stop(out))):
                still.append(m)
        active = still
        if not active:
            break
    return outs


@dataclass
class Eigenpairs:
    """Top-k eigenvalues (largest magnitude first), flat eigenvectors (rows) and residual bounds."""

    eigenvalues: list[float]
    eigenvectors: torch.Tensor  # (k, dim)
    residuals: list[float]  # ||H v - theta v|| per pair
    hvps: int
    steps: int
    converged: bool
    bounds: list[float] = field(default_factory=list)  # bound on |theta - lambda| per pair (error_bounds)


@dataclass
class TopK:
    """Top-k eigenvalues of a model's Hessian as the hessian functions return them (any method)."""

    eigenvalues: list[float]  # largest magnitude first, sign kept
    eigenvectors: list[list[torch.Tensor]]  # per eigenvalue: tensors shaped like the parameters
    residuals: list[float | None]
    hvps: int | None
    seconds: float
    method: str = "lanczos"
    converged: bool = True
    bounds: list[float | None] | None = None  # bound on |eigenvalue - true eigenvalue| (lanczos.error_bounds)


BOUNDS = ("gap", "residual")


def error_bounds(theta: torch.Tensor, residuals: torch.Tensor, bound: str = "residual") -> torch.Tensor:
    """Bounds on |theta_i - lambda_i| for every Ritz pair (Ritz values THETA, residual norms RESIDUALS).

    ``residual``: ||r_i|| (some eigenvalue of a symmetric H lies within ||r_i|| of theta_i; Parlett,
    "The Symmetric Eigenvalue Problem", ch. 11). ``gap``: the tighter of that and the
    quadratic bound ||r_i||^2 / gap_i (Kato-Temple; Parlett ch. 11; Templates Sec. 4.8), which
    holds when no other eigenvalue than lambda_i lies within gap_i of theta_i. gap_i is estimated from
    the other Ritz values as ``min_j |theta_i - theta_j| - ||r_j||`` (each theta_j moved towards theta_i
    by its own residual, within which an eigenvalue lies); the quadratic bound is used only where its
    assumptions hold as estimated (gap_i > 0 and ||r_i|| < gap_i), and never with a single Ritz value
    (no gap is known then). An eigenvalue not yet seen by the Krylov space at all is invisible to
    either bound (as to any Krylov method).
    """
    if bound not in BOUNDS:
        raise VitlensError(f"unknown Lanczos bound '{bound}'; choose from {', '.join(BOUNDS)}")
    theta, residuals = theta.double(), residuals.double()
    if bound == "residual" or len(theta) < 2:
        return residuals.clone()
    dist = (theta[:, None] - theta[None, :]).abs() - residuals[None, :]
    dist.fill_diagonal_(float("inf"))
    gap = dist.min(dim=1).values
    usable = (gap > 0) & (residuals < gap)
    quadratic = torch.where(usable, residuals ** 2 / gap.clamp_min(1e-300), residuals)
    return torch.minimum(residuals, quadratic)


def _select(tri: Tridiagonal, k: int, bound: str = "residual"):
    """Top-K Ritz values by magnitude, their vectors in T's basis, residual norms and error bounds."""
    theta, S = tri.ritz()
    order = torch.argsort(theta.abs(), descending=True)[:k]
    residual_all = abs(tri.beta[-1]) * S[-1].abs()
    bounds = error_bounds(theta, residual_all, bound)[order].tolist()
    return theta[order], S[:, order], residual_all[order].tolist(), bounds


def top_eigenpairs(matvec: Callable[[torch.Tensor], torch.Tensor], dim: int, *, k: int = 5, tol: float = 1e-2,
                   max_steps: int = 100, generator: torch.Generator | None = None,
                   dtype: torch.dtype = torch.float32, device: torch.device | str = "cpu",
                   bound: str = "residual") -> Eigenpairs:
    """The K eigenvalues of largest magnitude (sign kept) and their eigenvectors, by Lanczos.

    Stops when every selected Ritz pair's error bound (`error_bounds`: with BOUND "gap", the tighter
    of ||H v - theta v|| and ||H v - theta v||^2 / gap; with "residual", the residual norm alone) is
    at most ``tol * |theta|``, or after MAX_STEPS. The default tol = 1e-2 so bounds each eigenvalue's
    relative error by 1%; measured errors against a tight reference are in benchmarks/README.md.
    """
    if k < 1:
        raise VitlensError(f"k must be at least 1, got {k}")
    if k > dim:
        raise VitlensError(f"k={k} is larger than the number of parameters ({dim})")
    generator = generator or torch.Generator().manual_seed(0)
    start = torch.randn(dim, generator=generator, dtype=dtype).to(device)
    return top_eigenpairs_stacked(lambda V, rows: matvec(V[0])[None], start[None], k, tol, max_steps, bound)[0]


def top_eigenpairs_stacked(matmat: Callable[[torch.Tensor, list[int]], torch.Tensor], starts: torch.Tensor,
                           k: int = 5, tol: float = 1e-2, max_steps: int = 100,
                           bound: str = "residual") -> list[Eigenpairs]:
    """`top_eigenpairs` for M problems in lockstep (see `lanczos_stacked`), from the rows of STARTS."""
    if bound not in BOUNDS:
        raise VitlensError(f"unknown Lanczos bound '{bound}'; choose from {', '.join(BOUNDS)}")

    def converged(tri: Tridiagonal) -> bool:
        if len(tri.alpha) < k:
            return False
        theta, _, _, bounds = _select(tri, k, bound)
        return all(b <= tol * abs(t) for b, t in zip(bounds, theta.tolist()))

    pairs = []
    for tri in lanczos_stacked(matmat, starts, max(int(max_steps), k), stop=converged):
        theta, S, residual, bounds = _select(tri, k, bound)
        vectors = S.T.to(device=tri.basis.device, dtype=tri.basis.dtype) @ tri.basis  # Ritz vectors Q s (unit norm); T is eigen-solved on the CPU
        exhausted = tri.beta[-1] <= 1e-10 * max(1e-30, max(abs(a) for a in tri.alpha))
        pairs.append(Eigenpairs(eigenvalues=theta.tolist(), eigenvectors=vectors, residuals=residual,
                                hvps=tri.hvps, steps=len(tri.alpha), converged=exhausted or converged(tri),
                                bounds=bounds))
    return pairs
