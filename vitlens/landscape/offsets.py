"""The model's weights on a landscape: in-place offsets ``w0 + sum_k c_k d_k``, eval mode, the L2 term.

No model copies: `WeightOffsets` keeps one saved copy of the moved parameters and writes the
offset weights into them in place (under ``torch.no_grad``); the saved copy is written back at the
end, so the weights come back bit for bit, even after an error or an interrupt.
"""
from __future__ import annotations

import contextlib
from typing import Iterable, Sequence

import torch
import torch.nn as nn

from ..device import full_precision
from ..errors import VitlensError

L2_KINDS = ("paper", "half_squared")


def l2_term(params: Iterable[torch.Tensor], kind: str = "paper") -> float:
    """The paper's L2: sum of each parameter tensor's norm; or 0.5 * ||w||^2 ("half_squared")."""
    params = list(params)
    # dtype=float64 accumulates in double without a double copy of each tensor
    if kind == "paper":
        return float(sum(torch.linalg.vector_norm(p.detach(), dtype=torch.float64) for p in params))
    if kind == "half_squared":
        return float(0.5 * sum(torch.linalg.vector_norm(p.detach(), dtype=torch.float64) ** 2 for p in params))
    raise VitlensError(f"unknown l2 '{kind}'; choose from {', '.join(L2_KINDS)}")


class WeightOffsets:
    """Write ``w0 + sum_k c_k d_k`` into the model's parameters in place; `restore` puts w0 back.

    Only parameters some direction moves are touched (and saved). Use as a context manager so the
    weights are restored bit for bit however the block ends.
    """

    def __init__(self, model: nn.Module, directions: Sequence[dict]):
        params = dict(model.named_parameters())
        for k, d in enumerate(directions):
            unknown = sorted(set(d) - set(params))
            if unknown:
                raise VitlensError(f"direction {k + 1} names parameters the model lacks: {unknown[:3]}")
        self.names = [n for n, p in params.items()
                      if any(n in d and torch.count_nonzero(d[n]) for d in directions)]
        if not self.names:
            raise VitlensError("every direction is zero: nothing to move")
        self.params = [params[n] for n in self.names]
        for n, p in params.items():
            if not torch.isfinite(p).all():
                raise VitlensError(f"the model's weights are not finite ({n}): fix the checkpoint first")
        self.origin = [p.detach().clone() for p in self.params]
        self.directions = [[(d[n].to(device=p.device, dtype=p.dtype) if n in d else None)
                            for n, p in zip(self.names, self.params)] for d in directions]
        self.coords: tuple = (0.0,) * len(directions)

    @torch.no_grad()
    def set(self, coords: Sequence[float]) -> None:
        coords = tuple(float(c) for c in coords)
        for i, p in enumerate(self.params):
            first = True  # the first offset is fused with the copy of w0: one pass fewer
            for c, d in zip(coords, self.directions):
                if c != 0.0 and d[i] is not None:
                    if first:
                        torch.add(self.origin[i], d[i], alpha=c, out=p)
                        first = False
                    else:
                        p.add_(d[i], alpha=c)
            if first:
                p.copy_(self.origin[i])
        self.coords = coords

    @torch.no_grad()
    def stacked(self, points: Sequence[Sequence[float]]) -> dict[str, torch.Tensor]:
        """{name: (P, *shape)}: each moved parameter at each of the P POINTS (``w0 + sum_k c_k d_k``), for
        one batched (vmap) forward pass over several points; the model's own weights are not touched."""
        out = {}
        for name, w0, dirs in zip(self.names, self.origin, zip(*self.directions)):
            rows = []
            for coords in points:
                w = w0.clone()
                for c, d in zip(coords, dirs):
                    if float(c) != 0.0 and d is not None:
                        w.add_(d, alpha=float(c))
                rows.append(w)
            out[name] = torch.stack(rows)
        return out

    @torch.no_grad()
    def restore(self) -> None:
        for p, w in zip(self.params, self.origin):
            p.copy_(w)
        self.coords = (0.0,) * len(self.directions)

    def __enter__(self) -> "WeightOffsets":
        return self

    def __exit__(self, *exc) -> None:
        self.restore()


@contextlib.contextmanager
def eval_mode(model: nn.Module):
    """Eval mode and float32 kernels (no TF32, `full_precision`) for the duration, every module's
    training flag restored after."""
    modes = {m: m.training for m in model.modules()}
    model.eval()
    try:
        with full_precision():
            yield model
    finally:
        for m, flag in modes.items():
            m.training = flag
