"""Directions in weight space for loss landscapes.

A direction is a plain ``dict`` {parameter name: tensor shaped like the parameter}, with an entry
for every parameter of the model (zeros where the direction does not move the weights), on the
model's device and dtype. Buffers (BatchNorm running statistics, index tables) are never moved.

Random directions (Li et al. 2018, "Visualizing the Loss Landscape of Neural Nets", Sec. 4):
a Gaussian d ~ N(0, I) per parameter, then rescaled so the plot is comparable across models of
different weight scale. Normalisations:

  * ``filter`` (Li et al.): each *output filter* d[i] (slice i along dim 0: a conv filter
    (in, kh, kw), a linear layer's row) is rescaled to the norm of the weight's filter:
    ``d[i] <- d[i] * ||w[i]|| / ||d[i]||``. Afterwards every filter of d has the norm of w's.
  * ``filter_paper``: the variant in the code of Park & Kim 2022 (their ``normalize_filter``), which
    takes the norms along dim 0 instead: for every position j over the *other* dims (input channel,
    kernel offset), the vector across output filters ``d[:, j]`` is rescaled to ``||w[:, j]||``
    (with 1e-7 added to ``||d[:, j]||``). The matched quantity is the norm of each
    input-channel/kernel-position column, not of each output filter; for a tensor whose dim 0 has
    size 1 (ViT's ``cls_token``) it becomes elementwise, ``d = sign(d) * |w|``. The two agree
    only for special shapes; both give directions of comparable scale to w.
  * ``layer``: each parameter tensor as a whole: ``d <- d * ||w|| / ||d||``.
  * ``model``: the whole direction at once: ``d <- d * ||w||_all / ||d||_all``.
  * ``none``: the raw Gaussian.

By default, as in Li et al. and the paper, biases and normalisation parameters (every parameter
with at most one dimension) are zeroed, and position embeddings and relative-position bias tables
(names matching ``pos_embed`` / ``relative_position``, the paper's ``kws``) are excluded
(zeroed). When 1-D parameters are included, each is normalised as one filter.

Seeding: one CPU ``torch.Generator`` seeded with ``seed`` draws direction 1 for every parameter in
``named_parameters()`` order, then direction 2, ...; excluded parameters are drawn too (and then
zeroed), so what is excluded never changes the other entries, and CPU and GPU runs get the same
directions.

Other directions: `hessian_directions` (top eigenvectors of the loss Hessian, needs
``vitlens.hessian``), `trajectory_directions` (PCA of a training trajectory, Li et al. Sec. 7) and
`path_direction` (the straight line between two weight vectors, Goodfellow et al. 2015).
"""
from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Iterable, Sequence

import torch
import torch.nn as nn

from ..errors import VitlensError
from ..hessian.hvp import HessianOperator
from ..hessian.lanczos import top_eigenpairs
from ..hessian.loss import LossConfig, hessian_mode, trainable_parameters
from ..models import read_state_dict

Direction = dict  # {parameter name: tensor}

NORMALIZATIONS = ("filter", "filter_paper", "layer", "model", "none")
# Park & Kim's loss-landscape notebook excludes these (regex, as their `ignore_kw`).
EMBEDDING_PATTERNS = (r"pos_embed", r"relative_position")


def _selected(name: str, param: torch.Tensor, include_bias_norm: bool, include_pos_embed: bool,
              exclude: Sequence[str]) -> bool:
    if not include_bias_norm and param.dim() <= 1:
        return False
    if not include_pos_embed and any(re.search(p, name) for p in EMBEDDING_PATTERNS):
        return False
    return not any(re.search(p, name) for p in exclude)


def _norms_over(t: torch.Tensor, dims: tuple) -> torch.Tensor:
    return torch.linalg.vector_norm(t.double(), dim=dims, keepdim=True) if dims else t.double().abs()


def normalize_direction(direction: Direction, weights: dict, normalization: str = "filter") -> Direction:
    """Rescale DIRECTION (in place, and returned) against WEIGHTS as described in the module doc.

    Entries that are all zero stay zero (excluded parameters are not brought back).
    """
    if normalization not in NORMALIZATIONS:
        raise VitlensError(f"unknown normalization '{normalization}'; choose from {', '.join(NORMALIZATIONS)}")
    if normalization == "none":
        return direction
    with torch.no_grad():
        if normalization == "model":
            active = [n for n, d in direction.items() if torch.count_nonzero(d)]
            d_norm = math.sqrt(sum(float(torch.sum(direction[n].double() ** 2)) for n in active))
            w_norm = math.sqrt(sum(float(torch.sum(weights[n].double() ** 2)) for n in active))
            if d_norm > 0:
                for n in active:
                    direction[n].mul_(w_norm / d_norm)
            return direction
        for name, d in direction.items():
            if not torch.count_nonzero(d):
                continue
            w = weights[name].detach()
            if normalization == "layer" or d.dim() <= 1 and normalization == "filter":
                dims = tuple(range(d.dim()))  # the whole tensor (a 1-D tensor counts as one filter)
                eps = 0.0
            elif normalization == "filter":
                dims = tuple(range(1, d.dim()))  # Li et al.: one norm per output filter d[i]
                eps = 0.0
            else:  # filter_paper: norms along dim 0, one per input-channel/kernel position
                dims = (0,)
                eps = 1e-7
            w_norm, d_norm = _norms_over(w, dims), _norms_over(d, dims)
            scale = torch.where(d_norm + eps > 0, w_norm / (d_norm + eps), torch.zeros_like(d_norm))
            d.copy_((d.double() * scale).to(d.dtype))
    return direction


def random_direction(model: nn.Module, seed: int = 0, normalization: str = "filter",
                     include_bias_norm: bool = False, include_pos_embed: bool = False,
                     exclude: Sequence[str] = (), generator: torch.Generator | None = None) -> Direction:
    """One seeded Gaussian direction, normalised (default: Li et al.'s filter normalisation)."""
    return random_directions(model, 1, seed, normalization, include_bias_norm, include_pos_embed,
                             exclude, generator)[0]


def random_directions(model: nn.Module, count: int = 2, seed: int = 0, normalization: str = "filter",
                      include_bias_norm: bool = False, include_pos_embed: bool = False,
                      exclude: Sequence[str] = (), generator: torch.Generator | None = None) -> list[Direction]:
    """COUNT seeded Gaussian directions (see the module doc for the options and the seeding)."""
    if normalization not in NORMALIZATIONS:
        raise VitlensError(f"unknown normalization '{normalization}'; choose from {', '.join(NORMALIZATIONS)}")
    generator = generator or torch.Generator().manual_seed(int(seed))
    params = dict(model.named_parameters())
    if not params:
        raise VitlensError("the model has no parameters: there is no loss landscape to draw")
    out = []
    for k in range(int(count)):
        direction = {}
        for name, p in params.items():
            d = torch.randn(p.shape, generator=generator, dtype=torch.float32)
            if not _selected(name, p, include_bias_norm, include_pos_embed, exclude):
                d.zero_()
            direction[name] = d.to(device=p.device, dtype=p.dtype)
        normalize_direction(direction, params, normalization)
        check_direction(direction, f"random direction {k + 1}")
        out.append(direction)
    return out


def direction_norm(direction: Direction) -> float:
    return math.sqrt(sum(float(torch.sum(d.double() ** 2)) for d in direction.values()))


def check_direction(direction: Direction, what: str = "direction") -> None:
    """Zero-norm or non-finite directions are bad input (nothing would move, or everything breaks)."""
    for name, d in direction.items():
        if not torch.isfinite(d).all():
            raise VitlensError(f"{what} has non-finite values in {name}")
    if direction_norm(direction) == 0:
        raise VitlensError(f"{what} is zero (every parameter excluded, or identical weights): "
                           "the landscape along it would be flat by construction")


def _parameter_names(model: nn.Module) -> list[str]:
    return [n for n, _ in model.named_parameters()]


def _unflatten(model: nn.Module, flat: torch.Tensor, names: Sequence[str]) -> Direction:
    params = dict(model.named_parameters())
    out, start = {}, 0
    selected = set(names)
    for name, p in params.items():
        if name in selected:
            n = p.numel()
            out[name] = flat[start:start + n].reshape(p.shape).to(device=p.device, dtype=p.dtype).clone()
            start += n
        else:
            out[name] = torch.zeros_like(p)
    return out


# ----------------------------------------------------------------------------- Hessian eigenvectors


def hessian_directions(model: nn.Module, batches: Iterable, count: int = 2, weight_decay: float = 0.0,
                       seed: int = 0, tol: float = 1e-2, max_steps: int = 100) -> tuple[list[Direction], list[float]]:
    """The top-COUNT Hessian eigenvectors (largest |eigenvalue|) as unit-norm directions.

    Uses ``vitlens.hessian`` (Lanczos on Hessian-vector products of its loss: cross-entropy +
    (weight_decay / 2) ||w||^2, eval mode); BATCHES are (x, target) pairs. Returns (directions,
    eigenvalues).
    """
    params = trainable_parameters(model)
    names = {id(p): n for n, p in model.named_parameters()}
    with hessian_mode(model, train=False):
        op = HessianOperator(model, list(batches), LossConfig(weight_decay=weight_decay, seed=seed), params=params)
        pairs = top_eigenpairs(op.matvec, op.dim, k=count, tol=tol, max_steps=max_steps,
                               generator=torch.Generator().manual_seed(int(seed)), dtype=op.dtype, device=op.device)
        op.release()
    selected = [names[id(p)] for p in params]
    directions = [_unflatten(model, v.detach(), selected) for v in pairs.eigenvectors]
    for k, d in enumerate(directions):
        check_direction(d, f"Hessian eigenvector {k + 1}")
    return directions, list(pairs.eigenvalues)


# ----------------------------------------------------------------------------- checkpoints


def _read_params(model: nn.Module, source) -> dict[str, torch.Tensor]:
    """Parameters (not buffers) of a checkpoint path, state dict or model, checked against MODEL."""
    if isinstance(source, nn.Module):
        state = dict(source.named_parameters())
        what = "the other model"
    elif isinstance(source, dict):
        state, what = source, "the state dict"
    else:
        state, what = read_state_dict(source), Path(source).name
    out = {}
    for name, p in model.named_parameters():
        if name not in state:
            raise VitlensError(f"{what} has no parameter {name}: it is not a checkpoint of this model")
        t = state[name].detach()
        if t.shape != p.shape:
            raise VitlensError(f"{what}: {name} has shape {tuple(t.shape)}, the model {tuple(p.shape)}")
        if not torch.isfinite(t).all():
            raise VitlensError(f"{what}: {name} has non-finite weights")
        out[name] = t.to(device=p.device, dtype=p.dtype)
    return out


def checkpoint_files(folder_or_files) -> list[Path]:
    """Checkpoints of a training run: a folder (``epoch_NNN.safetensors`` from ``vitlens train``,
    or any weight files, sorted by name) or a list of paths."""
    if isinstance(folder_or_files, (str, Path)):
        folder = Path(folder_or_files)
        if not folder.is_dir():
            raise VitlensError(f"trajectory folder not found: {folder}")
        files = sorted(folder.glob("epoch_*.safetensors")) or sorted(
            p for p in folder.iterdir() if p.suffix in (".safetensors", ".pt", ".pth"))
    else:
        files = [Path(p) for p in folder_or_files]
    if len(files) < 2:
        raise VitlensError(f"a trajectory needs at least 2 checkpoints, found {len(files)}")
    return files


def path_direction(model: nn.Module, endpoint) -> Direction:
    """The straight path from MODEL's weights (x = 0) to ENDPOINT's (x = 1): d = w_end - w_model.

    ENDPOINT is a checkpoint path, a state dict or a model. Only parameters move; BatchNorm running
    statistics stay those of MODEL along the whole path.
    """
    end = _read_params(model, endpoint)
    direction = {n: (end[n] - p.detach()) for n, p in model.named_parameters()}
    check_direction(direction, "the path direction (endpoint minus start)")
    return direction


def trajectory_directions(model: nn.Module, checkpoints, count: int = 2) -> tuple[list[Direction], dict]:
    """PCA of a training trajectory around MODEL's weights (Li et al. 2018, Sec. 7).

    The rows ``w_i - w_centre`` for each checkpoint (w_centre: MODEL's current weights, usually the
    last epoch) are centred (as scikit-learn's PCA in Li et al.'s code) and their top COUNT
    principal directions returned as unit vectors. Returns (directions, info) with the explained
    variance ratios and each checkpoint's coordinates (projection of w_i - w_centre) so the
    trajectory can be drawn on the surface.
    """
    files = checkpoint_files(checkpoints)
    names = _parameter_names(model)
    centre = {n: p.detach() for n, p in model.named_parameters()}
    rows = []
    for f in files:
        w = _read_params(model, f)
        rows.append(torch.cat([(w[n] - centre[n]).reshape(-1).double().cpu() for n in names]))
    M = torch.stack(rows)  # (checkpoints, parameters)
    X = M - M.mean(dim=0, keepdim=True)
    gram = X @ X.T  # small (checkpoints x checkpoints): PCA through its eigen-decomposition
    values, vectors = torch.linalg.eigh(gram)
    order = torch.argsort(values, descending=True)
    values, vectors = values[order].clamp_min(0), vectors[:, order]
    rank = int((values > 1e-12 * max(float(values[0]), 1e-300)).sum())
    if rank < count:
        raise VitlensError(f"the trajectory spans only {rank} direction(s) (need {count}): "
                           "use more (and different) checkpoints")
    components = []
    for k in range(count):
        v = X.T @ vectors[:, k]
        components.append(v / torch.linalg.vector_norm(v))
    coords = (M @ torch.stack(components).T).tolist()
    info = {"explained_variance_ratio": (values[:count] / values.sum()).tolist(),
            "checkpoints": [str(f) for f in files],
            "coordinates": [[float(c) for c in row] for row in coords]}
    directions = [_unflatten(model, c.float(), names) for c in components]
    return directions, info
