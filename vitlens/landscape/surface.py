"""Loss on a grid of points w0 + x * d1 + y * d2, at the cost of one forward pass per point.

The paper's setting (Park & Kim 2022, Fig 1 and their loss-landscape notebook): a 21x21 grid over
[-1, 1]^2 along two filter-normalised random directions; at each point the NLL on the (augmented)
training set with the model in eval mode, plus ``weight_decay * L2`` where their L2 is the sum over
parameter tensors of each tensor's Euclidean norm (``l2="paper"``). ``l2="half_squared"`` gives
``0.5 * ||w||^2`` instead, the convention of ``vitlens.hessian`` (its Hessian is weight_decay * I).

Why it is fast:
  * no model copies: `WeightOffsets` keeps one saved copy of the moved parameters and writes
    ``w0 + x d1 + y d2`` into them in place (under ``torch.no_grad``) before each point; the saved
    copy is written back at the end, so the weights come back bit for bit, even after an error or
    an interrupt. The paper's code deep-copies and reloads the whole state dict per point.
  * the samples are prepared once (decoded, normalised, soft targets mixed once with a seeded
    generator, moved to the device) and reused at every point; no data loader per point.
  * statistical mode (``tolerance > 0`` or ``rtol > 0``, below): most points are estimated from a
    small random part of the samples, with the exact losses of a coarse sub-grid as controls.

Statistical mode. A coarse sub-grid of *anchor* points (``anchors`` per axis, evenly spaced grid
points including both ends, plus the centre when it is a grid point: 5x5 on the paper's 21x21) is
evaluated on every sample first; anchor rows are exact (SE 0). Every other point visits the samples
in one seeded random order, so any prefix is a simple random sample of the whole set, and is
estimated with the regression estimator (Cochran, "Sampling Techniques", 3rd ed., Ch. 7; with
several controls its multiple-regression form): the controls are the per-sample losses of the
anchors at the corners of the point's cell (2 on an anchor line or a 1D path, 4 inside), whose
population means are known exactly. Far from the centre the per-sample NLL is heavy-tailed (a
few samples with losses in the hundreds), but the same samples are heavy at the neighbouring
anchors, so the regression residuals are small and well behaved where a single centre control
(the previous design) correlated poorly. Standard errors include the finite-population
correction, so a point that used every sample is exact (SE 0).

Stopping rule: a point stops once ``z * SE <= max(tolerance, rtol * |loss|)`` held at the last two
checks (one per batch) and it has used at least ``min_samples`` samples (and ``min_batches``
batches). Why these guards: the SE from a short prefix is itself a noisy estimate, smallest exactly
when the prefix happens to miss the rare heavy-loss samples; stopping at the first lucky check
then under-covers. In a simulation over 8 sample orders of the demo_resnet 21x21 surface (bound
max(0.05, 0.02 |loss|)), stopping at the first check after 32 samples missed the bound in 1 of
the 8 orders (worst error 2.7x the bound); with 128 samples and two checks in a row it never did.
A floor on the variance from the neighbouring point was tried as well; it barely moved the
coverage (440.5 -> 440.6 of 441 points within z * SE, mean over the 8 orders) for 4% more
samples, so it is not used. ``z`` is per point, and stopping when the SE first looks small makes
the coverage a little below nominal (simulated demo_vit surface: ~4 of its 416 estimated points
outside z * SE at z = 3, where ~1 is nominal). The stated bound is usually looser than z * SE,
since most points stop at the minimum sample count; for a guarantee over a whole 441-point grid
use z ~ 4 (Bonferroni, 5%). benchmarks/README.md gives the measured figures.

Model state: eval mode (BatchNorm uses its running statistics, which stay as they are at every
point: only parameters move, never buffers; dropout off). This is the paper's choice
(``model.eval()`` in their test loop) and makes the loss a deterministic function of the weights.

Non-finite points (overflowing weights, NaN logits) are kept as rows with ``finite = False`` and
never stop the grid. Non-finite weights at the centre are bad input (VitlensError).
"""
from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass, field
from typing import Callable, Iterable, Sequence

import numpy as np
import pandas as pd
import torch
import torch.nn as nn
import torch.nn.functional as F

from ..errors import VitlensError

L2_KINDS = ("paper", "half_squared")
MAX_GRID = 501  # points per axis; beyond this a grid is almost surely a typo (251,001 forward passes)
COLUMNS = ["i", "j", "x", "y", "loss", "nll", "l2", "accuracy", "samples", "stderr", "finite"]


# ----------------------------------------------------------------------------- samples


@dataclass
class Samples:
    """The evaluation samples, prepared once: batches of (x, target, label) on the model's device."""

    batches: list = field(default_factory=list)

    @property
    def count(self) -> int:
        return sum(len(b[0]) for b in self.batches)


def prepare_samples(data, batch_size: int = 64, seed: int = 0, shuffle: bool = True,
                    num_classes: int | None = None, mixup: float = 0.0, cutmix: float = 0.0,
                    label_smoothing: float = 0.0, device: torch.device | str | None = None) -> Samples:
    """Prepare DATA (a Dataset, or an iterable of (x, y) batches) for `loss_surface`.

    With ``shuffle`` the samples are visited in an order fixed by SEED (statistical mode relies on
    it: every prefix is then a random sample). Mixup/cutmix/label smoothing are applied once per
    batch with a generator seeded by SEED, so every grid point sees the same mixed inputs (the paper
    re-draws the mixing at every point, which adds noise between points).
    """
    from ..data import make_loader, soft_targets
    if isinstance(data, torch.utils.data.Dataset):
        if len(data) == 0:
            raise VitlensError("the data set is empty: the loss landscape needs at least one sample")
        data = make_loader(data, batch_size, shuffle=shuffle, seed=seed)
    soft = mixup > 0 or cutmix > 0 or label_smoothing > 0
    generator = torch.Generator().manual_seed(int(seed))
    out = Samples()
    for x, y in data:
        x, y = torch.as_tensor(x), torch.as_tensor(y)
        if len(x) == 0:
            continue
        label = y.argmax(dim=1) if y.dim() > 1 else y.long()
        target = y if y.dim() > 1 else y.long()
        if soft and y.dim() == 1:
            if not num_classes:
                raise VitlensError("soft targets (mixup/cutmix/label smoothing) need the number of classes")
            x, target = soft_targets(x, y.long(), int(num_classes), mixup, cutmix, label_smoothing, generator)
            label = target.argmax(dim=1)  # accuracy against the dominant class, as the paper's code
        out.batches.append((x.to(device) if device is not None else x,
                            target.to(device) if device is not None else target,
                            label.to(device) if device is not None else label))
    if not out.batches:
        raise VitlensError("the data set is empty: the loss landscape needs at least one sample")
    return out


def per_sample_nll(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """-log p(target | x) per sample; TARGET is integer labels (B,) or soft targets (B, C)."""
    logp = F.log_softmax(logits.float(), dim=1)
    if target.dim() == 1:
        return -logp.gather(1, target.long()[:, None]).squeeze(1)
    return -(target.float() * logp).sum(dim=1)


def l2_term(params: Iterable[torch.Tensor], kind: str = "paper") -> float:
    """The paper's L2: sum of each parameter tensor's norm; or 0.5 * ||w||^2 ("half_squared")."""
    params = list(params)
    # dtype=float64 accumulates in double without a double copy of each tensor
    if kind == "paper":
        return float(sum(torch.linalg.vector_norm(p.detach(), dtype=torch.float64) for p in params))
    if kind == "half_squared":
        return float(0.5 * sum(torch.linalg.vector_norm(p.detach(), dtype=torch.float64) ** 2 for p in params))
    raise VitlensError(f"unknown l2 '{kind}'; choose from {', '.join(L2_KINDS)}")


# ----------------------------------------------------------------------------- in-place offsets


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
    """Eval mode for the duration, every module's training flag restored after."""
    modes = {m: m.training for m in model.modules()}
    model.eval()
    try:
        yield model
    finally:
        for m, flag in modes.items():
            m.training = flag


# ----------------------------------------------------------------------------- one point


def _estimate(y: torch.Tensor, controls: torch.Tensor | None, control_means: torch.Tensor | None,
              population: int) -> tuple[float, float]:
    """Mean of Y over the population from a simple random sample (the first n of a random order).

    CONTROLS (n, p): the same samples' values of p variables whose population means CONTROL_MEANS
    are known (here: anchor points' per-sample losses). With them the regression estimator
    ``ybar + b . (Xbar - xbar)``, b the least-squares slopes of y on the controls (Cochran,
    "Sampling Techniques", Ch. 7), and its standard error from the residual variance with n - p - 1
    degrees of freedom; without, the sample mean. Both with the finite-population correction
    (exact, SE 0, once n = population).
    """
    n = len(y)
    if n >= population:
        return float(y.mean()), 0.0
    fpc = 1.0 - n / population
    ym = y.mean()
    dy = y - ym
    if controls is None or controls.shape[1] == 0 or n < controls.shape[1] + 3:
        s2 = float((dy ** 2).sum()) / max(n - 1, 1)
        return float(ym), math.sqrt(s2 / n * fpc)
    xm = controls.mean(dim=0)
    dx = controls - xm
    # least squares on centred values (the intercept is then the means); gelsd copes with controls
    # that are collinear on the prefix (e.g. 0/1 correctness that is 1 everywhere so far)
    fit = torch.linalg.lstsq(dx, dy[:, None], driver="gelsd")
    b, rank = fit.solution[:, 0], int(fit.rank)
    resid = dy - dx @ b
    s2 = float((resid ** 2).sum()) / max(n - rank - 1, 1)
    return float(ym + (control_means - xm) @ b), math.sqrt(s2 / n * fpc)


class PointEvaluator:
    """Loss, NLL, L2 and accuracy at grid points of one model, data set and set of directions.

    Statistical mode (TOLERANCE or RTOL > 0): first `add_anchor` the points whose per-sample values
    serve as controls (`set_control` adds the centre alone); `evaluate` then stops early, with the
    anchors at the corners of the point's cell as controls (see the module docstring).
    """

    def __init__(self, model: nn.Module, samples: Samples, directions: Sequence[dict], *,
                 weight_decay: float = 0.0, l2: str = "paper", tolerance: float = 0.0, rtol: float = 0.0,
                 z: float = 3.0, min_batches: int = 2, min_samples: int = 128):
        if l2 not in L2_KINDS:
            raise VitlensError(f"unknown l2 '{l2}'; choose from {', '.join(L2_KINDS)}")
        for name, value in (("weight_decay", weight_decay), ("tolerance", tolerance), ("rtol", rtol)):
            if not math.isfinite(value) or value < 0:
                raise VitlensError(f"{name} must be a finite number >= 0, got {value}")
        if not z > 0:
            raise VitlensError(f"z must be > 0, got {z}")
        self.model, self.samples = model, samples
        self.offsets = WeightOffsets(model, directions)
        self.weight_decay, self.l2_kind = float(weight_decay), l2
        self.tolerance, self.rtol, self.z = float(tolerance), float(rtol), float(z)
        self.min_batches = max(int(min_batches), 1)
        self.min_samples = max(int(min_samples), 1)
        self.population = samples.count
        self.all_params = list(model.parameters())
        # anchors' per-sample (nll, correct), float64 CPU, keyed by coordinates (statistical mode)
        self.anchors: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = {}
        self.samples_evaluated = 0  # forward-passed samples over all points (cost accounting)
        self.points_evaluated = 0

    @property
    def statistical(self) -> bool:
        return self.tolerance > 0 or self.rtol > 0

    def add_anchor(self, coords: Sequence[float]) -> dict:
        """Evaluate COORDS on every sample (an exact row) and keep its per-sample values as a control."""
        coords = tuple(float(c) for c in coords)
        row, per_sample = self._run(coords, keep=True, stop=False)
        if row["finite"] and per_sample is not None:
            self.anchors[coords] = per_sample
        return row

    def set_control(self) -> dict:
        """The centre as the only anchor (the earlier design; `loss_surface` uses a sub-grid)."""
        return self.add_anchor((0.0,) * len(self.offsets.directions))

    @torch.no_grad()
    def evaluate(self, coords: Sequence[float]) -> dict:
        row, _ = self._run(coords, keep=self.statistical, stop=self.statistical)
        return row

    def cell_anchors(self, coords: Sequence[float]) -> list[tuple]:
        """The anchors at the corners of the anchor-lattice cell holding COORDS (those that exist).

        Per axis the nearest anchor coordinate at or below and at or above (one when it is on an
        anchor line or outside the lattice); the corners are all their combinations."""
        if not self.anchors:
            return []
        per_axis = []
        for k, c in enumerate(coords):
            values = sorted({a[k] for a in self.anchors})
            below = [v for v in values if v <= c]
            above = [v for v in values if v >= c]
            per_axis.append(sorted({below[-1] if below else above[0], above[0] if above else below[-1]}))
        corners = [()]
        for values in per_axis:
            corners = [corner + (v,) for corner in corners for v in values]
        return [corner for corner in corners if corner in self.anchors]

    @torch.no_grad()
    def _run(self, coords, keep: bool, stop: bool):
        self.offsets.set(coords)
        self.points_evaluated += 1
        l2 = l2_term(self.all_params, self.l2_kind)
        controls = self._controls(coords) if stop else None
        nll_sum, correct_sum, n = 0.0, 0.0, 0
        nll_parts, correct_parts = [], []
        finite = math.isfinite(l2)
        estimate = (math.nan, math.nan, 0.0)
        passed = 0  # consecutive checks that met the tolerance
        for b, (x, target, label) in enumerate(self.samples.batches):
            logits = self.model(x)
            nll = per_sample_nll(logits, target).double()
            correct = (logits.argmax(dim=1) == label).double()
            n += len(nll)
            self.samples_evaluated += len(nll)
            nll_sum += float(nll.sum())
            correct_sum += float(correct.sum())
            if not torch.isfinite(nll).all():
                finite = False
                break  # a non-finite point stays non-finite: no need to look further
            if keep:
                nll_parts.append(nll.cpu())
                correct_parts.append(correct.cpu())
            if stop and n < self.population:
                estimate = self._statistical_estimate(nll_parts, correct_parts, controls)
                loss = estimate[0] + self.weight_decay * l2
                met = self.z * estimate[2] <= max(self.tolerance, self.rtol * abs(loss))
                passed = passed + 1 if met else 0
                # two checks in a row and a minimum sample: see the module docstring
                if passed >= 2 and n >= self.min_samples and b + 1 >= self.min_batches:
                    break
        if finite and n < self.population:
            nll_mean, accuracy, stderr = estimate
        else:
            nll_mean, accuracy, stderr = nll_sum / n, correct_sum / n, 0.0
        loss = nll_mean + self.weight_decay * l2
        finite = finite and math.isfinite(loss)
        row = dict(loss=loss, nll=nll_mean, l2=l2, accuracy=accuracy, samples=n,
                   stderr=stderr if finite else math.nan, finite=bool(finite))
        per_sample = (torch.cat(nll_parts), torch.cat(correct_parts)) if keep and nll_parts else None
        return row, per_sample

    def _controls(self, coords):
        """(nll controls, their means, correct controls, their means) of COORDS' cell, or None."""
        corners = self.cell_anchors(tuple(float(c) for c in coords))
        if not corners:
            return None
        nll = torch.stack([self.anchors[c][0] for c in corners], dim=1)
        correct = torch.stack([self.anchors[c][1] for c in corners], dim=1)
        return nll, nll.mean(dim=0), correct, correct.mean(dim=0)

    def _statistical_estimate(self, nll_parts, correct_parts, controls) -> tuple[float, float, float]:
        y, c = torch.cat(nll_parts), torch.cat(correct_parts)
        n = len(y)
        if controls is not None:
            cn, cn_mean, cc, cc_mean = controls
            nll, se = _estimate(y, cn[:n], cn_mean, self.population)
            acc, _ = _estimate(c, cc[:n], cc_mean, self.population)
            acc = min(max(acc, 0.0), 1.0)  # the regression estimate of a proportion can overshoot
        else:
            nll, se = _estimate(y, None, None, self.population)
            acc, _ = _estimate(c, None, None, self.population)
        return nll, acc, se

    def restore(self) -> None:
        self.offsets.restore()


# ----------------------------------------------------------------------------- grids


def grid_axis(points: int, low: float, high: float, what: str = "grid") -> np.ndarray:
    """`points` evenly spaced values in [low, high], checked."""
    if isinstance(points, bool) or not isinstance(points, (int, np.integer)):
        raise VitlensError(f"{what} size must be an integer, got {points!r}")
    if points < 2 or points > MAX_GRID:
        raise VitlensError(f"{what} size must be between 2 and {MAX_GRID} points per axis, got {points}")
    low, high = float(low), float(high)
    if not (math.isfinite(low) and math.isfinite(high)):
        raise VitlensError(f"{what} range must be finite, got [{low}, {high}]")
    if not high > low:
        raise VitlensError(f"{what} range is empty: [{low}, {high}] (give a non-zero range, low < high)")
    axis = np.linspace(low, high, int(points))
    if np.any(np.abs(axis) < 1e-12 * (high - low)):
        axis[np.abs(axis) < 1e-12 * (high - low)] = 0.0  # the centre exactly, whatever linspace rounds to
    return axis


def anchor_indices(points: int, anchors: int, centre: int | None = None) -> list[int]:
    """ANCHORS evenly spaced indices of an axis of POINTS grid points, both ends included, plus
    CENTRE (the index of coordinate 0) when given; every index when ANCHORS >= POINTS."""
    if isinstance(anchors, bool) or not isinstance(anchors, (int, np.integer)) or anchors < 2:
        raise VitlensError(f"anchors must be an integer >= 2 (points per axis), got {anchors!r}")
    chosen = set(np.round(np.linspace(0, points - 1, min(int(anchors), points))).astype(int).tolist())
    if centre is not None:
        chosen.add(int(centre))
    return sorted(chosen)


def loss_surface(model: nn.Module, samples: Samples, directions: Sequence[dict], xs: Sequence[float],
                 ys: Sequence[float] | None = None, *, weight_decay: float = 0.0, l2: str = "paper",
                 tolerance: float = 0.0, rtol: float = 0.0, z: float = 3.0, min_batches: int = 2,
                 min_samples: int = 128, anchors: int = 5, done: pd.DataFrame | None = None,
                 on_checkpoint: Callable[[pd.DataFrame], None] | None = None, checkpoint_every: float = 2.0,
                 progress=None, share: tuple[int, int] = (0, 1)) -> tuple[pd.DataFrame, dict]:
    """The loss at every point ``w0 + x d1 (+ y d2)`` of the grid XS (x YS); one direction for a 1D
    path (YS None), two for a surface.

    Returns (frame, info): one row per point with the columns `COLUMNS` (i, j: grid indices; y = 0
    on a 1D path), rows ordered y-major as the paper's grid. DONE holds rows already computed (a
    resumed run); they are kept and skipped. ON_CHECKPOINT(frame of rows so far) is called at most
    every CHECKPOINT_EVERY seconds, at the end, and when the run is interrupted. PROGRESS (anything
    with ``update(n, message)``) counts points. The model's weights and train/eval flags are
    restored however this ends. SHARE = (rank, ranks) evaluates only every ranks-th point left to do
    (torchrun: each rank one share; the caller gathers the rows).

    Statistical mode (TOLERANCE or RTOL > 0; Z, MIN_SAMPLES, MIN_BATCHES: the stopping rule):
    ANCHORS points per axis (`anchor_indices`, the centre added) are evaluated on every sample
    first and serve as controls for the others (module docstring). Under SHARE every rank
    evaluates all anchors (each needs their per-sample values) but only rank 0 returns their rows;
    the other points are dealt out.
    """
    xs = [float(v) for v in xs]
    ys_list = [0.0] if ys is None else [float(v) for v in ys]
    want = 1 if ys is None else 2
    if len(directions) != want:
        raise VitlensError(f"a {'1D path' if want == 1 else '2D surface'} needs {want} direction(s), "
                           f"got {len(directions)}")
    rank, ranks = share
    rows: dict[tuple[int, int], dict] = {}
    if done is not None and len(done):
        for r in done.to_dict("records"):
            rows[(int(r["i"]), int(r["j"]))] = r
    resumed = len(rows)
    todo = [(i, j) for j in range(len(ys_list)) for i in range(len(xs)) if (i, j) not in rows]
    start = time.perf_counter()
    last_save = start

    def frame() -> pd.DataFrame:
        ordered = [rows[k] for k in sorted(rows, key=lambda ij: (ij[1], ij[0]))]
        return pd.DataFrame(ordered, columns=COLUMNS)

    def coords_of(ij):
        return (xs[ij[0]],) if ys is None else (xs[ij[0]], ys_list[ij[1]])

    with eval_mode(model):
        evaluator = PointEvaluator(model, samples, directions, weight_decay=weight_decay, l2=l2,
                                   tolerance=tolerance, rtol=rtol, z=z, min_batches=min_batches,
                                   min_samples=min_samples)
        anchor_list: list[tuple[int, int]] = []
        if evaluator.statistical:
            centre = _centre_index(xs, ys_list)
            anchor_i = anchor_indices(len(xs), anchors, None if centre is None else centre[0])
            anchor_j = anchor_indices(len(ys_list), anchors, None if centre is None else centre[1])
            grid_anchors = [(i, j) for j in anchor_j for i in anchor_i]
            is_anchor, left = set(grid_anchors), set(todo)
            rest = [ij for ij in todo if ij not in is_anchor]
            if rest:  # every rank needs every anchor's per-sample values
                anchor_list = grid_anchors
            elif rank == 0:  # only anchor rows are left: plain exact rows
                anchor_list = [ij for ij in grid_anchors if ij in left]
            todo = rest[rank::ranks]
        else:
            todo = todo[rank::ranks]
        jobs = [(ij, True) for ij in anchor_list] + [(ij, False) for ij in todo]
        try:
            for ij, anchor in jobs:
                if anchor:
                    row = evaluator.add_anchor(coords_of(ij))
                    if ij in rows or rank != 0:
                        continue  # a resumed row, or another rank's to return
                else:
                    row = evaluator.evaluate(coords_of(ij))
                rows[ij] = _row(ij, xs, ys_list, row)
                if progress is not None:
                    progress.update(1, f"{'anchor ' if anchor else ''}x={xs[ij[0]]:.3g} y={ys_list[ij[1]]:.3g}")
                now = time.perf_counter()
                if on_checkpoint is not None and now - last_save >= checkpoint_every:
                    on_checkpoint(frame())
                    last_save = now
        except BaseException:
            if on_checkpoint is not None and len(rows) > resumed:
                with contextlib.suppress(Exception):
                    on_checkpoint(frame())
            raise
        finally:
            evaluator.restore()
    result = frame()
    evaluated, runs = evaluator.samples_evaluated, evaluator.points_evaluated
    info = dict(points=len(result), resumed_points=resumed, samples=samples.count,
                samples_evaluated=int(evaluated), points_evaluated=int(runs), anchor_points=len(anchor_list),
                sample_fraction=evaluated / (samples.count * runs) if runs else 0.0,
                seconds=round(time.perf_counter() - start, 3),
                nonfinite_points=int((~result["finite"].astype(bool)).sum()),
                moved_parameters=len(evaluator.offsets.names))
    if on_checkpoint is not None:
        on_checkpoint(result)
    return result, info


def _centre_index(xs, ys) -> tuple[int, int] | None:
    i = next((k for k, v in enumerate(xs) if v == 0.0), None)
    j = next((k for k, v in enumerate(ys) if v == 0.0), None)
    return None if i is None or j is None else (i, j)


def _row(ij, xs, ys, values: dict) -> dict:
    i, j = ij
    return dict(i=i, j=j, x=xs[i], y=ys[j], **values)


# ----------------------------------------------------------------------------- sharpness


def _second_derivative(line: pd.DataFrame, coord: str) -> float:
    """f''(0) from the grid points nearest 0 on each side (three-point formula, uneven spacing)."""
    line = line.sort_values(coord)
    values = line[coord].to_numpy()
    loss = line["loss"].to_numpy()
    at = np.flatnonzero(values == 0.0)
    if len(at) != 1 or at[0] == 0 or at[0] == len(values) - 1:
        return math.nan
    k = at[0]
    h1, h2 = values[k] - values[k - 1], values[k + 1] - values[k]
    f0, fm, fp = loss[k], loss[k - 1], loss[k + 1]
    return float(2 * (h1 * fp - (h1 + h2) * f0 + h2 * fm) / (h1 * h2 * (h1 + h2)))


def sharpness(frame: pd.DataFrame, radius: float | None = None) -> dict:
    """Sharpness summaries of a surface (or 1D path) frame from `loss_surface`.

    * ``curvature_x`` / ``curvature_y``: second derivative of the loss at the centre along each
      axis, by the three-point finite difference on the grid (NaN when the centre is not a grid
      point or lies on the edge). In units of the direction (for filter-normalised directions:
      per squared filter-norm step).
    * ``rise_max`` / ``rise_mean``: the largest and the mean loss increase over the centre among
      the grid points within RADIUS of it (Euclidean in grid coordinates; default: a quarter of the
      smaller axis width, 0.5 on the paper's [-1, 1]^2); ``inf`` when a point inside is non-finite.
    """
    out = dict(centre_loss=math.nan, curvature_x=math.nan, curvature_y=math.nan, radius=math.nan,
               rise_max=math.nan, rise_mean=math.nan, min_loss=math.nan,
               nonfinite_points=int((~frame["finite"].astype(bool)).sum()))
    finite = frame[frame["finite"].astype(bool)]
    if len(finite):
        out["min_loss"] = float(finite["loss"].min())
    centre = frame[(frame["x"] == 0.0) & (frame["y"] == 0.0)]
    if len(centre) != 1 or not bool(centre["finite"].iloc[0]):
        return out
    c = float(centre["loss"].iloc[0])
    out["centre_loss"] = c
    out["curvature_x"] = _second_derivative(frame[frame["y"] == 0.0], "x")
    two_d = frame["y"].nunique() > 1
    if two_d:
        out["curvature_y"] = _second_derivative(frame[frame["x"] == 0.0], "y")
    if radius is None:
        widths = [frame["x"].max() - frame["x"].min()]
        if two_d:
            widths.append(frame["y"].max() - frame["y"].min())
        radius = float(min(widths)) / 4  # half of the smaller half-width: 0.5 on [-1, 1]^2
    radius = float(radius)
    if not radius > 0:
        raise VitlensError(f"radius must be > 0, got {radius}")
    inside = frame[np.hypot(frame["x"], frame["y"]) <= radius + 1e-12]
    out["radius"] = radius
    if len(inside):
        if not inside["finite"].astype(bool).all():
            out["rise_max"] = out["rise_mean"] = math.inf
        else:
            rise = inside["loss"] - c
            out["rise_max"], out["rise_mean"] = float(rise.max()), float(rise.mean())
    return out
