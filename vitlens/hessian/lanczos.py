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
    residuals: list[float]
    hvps: int
    steps: int
    converged: bool


def _select(tri: Tridiagonal, k: int):
    theta, S = tri.ritz()
    order = torch.argsort(theta.abs(), descending=True)[:k]
    residual = (abs(tri.beta[-1]) * S[-1, order].abs()).tolist()
    return theta[order], S[:, order], residual


def top_eigenpairs(matvec: Callable[[torch.Tensor], torch.Tensor], dim: int, k: int = 5, tol: float = 1e-2,
                   max_steps: int = 100, generator: torch.Generator | None = None,
                   dtype: torch.dtype = torch.float32, device: torch.device | str = "cpu") -> Eigenpairs:
    """The K eigenvalues of largest magnitude (sign kept) and their eigenvectors, by Lanczos.

    Stops when every selected Ritz pair has residual ``||H v - theta v|| <= tol * |theta|``, or after
    MAX_STEPS. For a symmetric H some eigenvalue lies within the residual norm of theta, so the
    default tol = 1e-2 bounds each eigenvalue's relative error by 1%; the actual error is of order
    residual^2 / gap (Kato-Temple; Parlett, "The Symmetric Eigenvalue Problem"), measured at 7e-5 to
    2e-3 (benchmarks/bench_hessian.py), against PyHessian's 4e-3 to 9e-3 at its defaults.
    """
    if k < 1:
        raise VitlensError(f"k must be at least 1, got {k}")
    if k > dim:
        raise VitlensError(f"k={k} is larger than the number of parameters ({dim})")
    generator = generator or torch.Generator().manual_seed(0)
    start = torch.randn(dim, generator=generator, dtype=dtype).to(device)
    return top_eigenpairs_stacked(lambda V, rows: matvec(V[0])[None], start[None], k, tol, max_steps)[0]


def top_eigenpairs_stacked(matmat: Callable[[torch.Tensor, list[int]], torch.Tensor], starts: torch.Tensor,
                           k: int = 5, tol: float = 1e-2, max_steps: int = 100) -> list[Eigenpairs]:
    """`top_eigenpairs` for M problems in lockstep (see `lanczos_stacked`), from the rows of STARTS."""
    def converged(tri: Tridiagonal) -> bool:
        if len(tri.alpha) < k:
            return False
        theta, _, residual = _select(tri, k)
        return all(r <= tol * abs(t) for r, t in zip(residual, theta.tolist()))

    pairs = []
    for tri in lanczos_stacked(matmat, starts, max(int(max_steps), k), stop=converged):
        theta, S, residual = _select(tri, k)
        vectors = (S.T.to(tri.basis.dtype) @ tri.basis)  # Ritz vectors Q s, unit norm
        exhausted = tri.beta[-1] <= 1e-10 * max(1e-30, max(abs(a) for a in tri.alpha))
        pairs.append(Eigenpairs(eigenvalues=theta.tolist(), eigenvectors=vectors, residuals=residual,
                                hvps=tri.hvps, steps=len(tri.alpha), converged=exhausted or converged(tri)))
    return pairs
