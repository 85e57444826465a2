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
  * statistical mode (``tolerance > 0`` or ``rtol > 0``, `vitlens.landscape.estimator`): most
    points are estimated from a small random part of the samples, with the exact losses of a
    coarse sub-grid as controls.

Model state: eval mode (BatchNorm uses its running statistics, which stay as they are at every
point: only parameters move, never buffers; dropout off). This is the paper's choice
(``model.eval()`` in their test loop) and makes the loss a deterministic function of the weights.

Non-finite points (overflowing weights, NaN logits) are kept as rows with ``finite = False`` and
never stop the grid. Non-finite weights at the centre are bad input (VitlensError).

Modules: `samples` (preparing the samples), `offsets` (moving the weights in place),
`estimator` (one point, exact or statistical), this one (the grid) and `sharpness` (summaries).
"""
from __future__ import annotations

import contextlib
import math
import time
from typing import Callable, Sequence

import numpy as np
import pandas as pd
import torch.nn as nn

from ..errors import VitlensError
from .estimator import PointEvaluator
from .offsets import eval_mode
from .samples import Samples

MAX_GRID = 501  # points per axis; beyond this a grid is almost surely a typo (251,001 forward passes)
COLUMNS = ["i", "j", "x", "y", "loss", "nll", "l2", "accuracy", "samples", "stderr", "finite"]


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
                 progress=None, share: tuple[int, int] = (0, 1),
                 points_per_pass: int = 1) -> tuple[pd.DataFrame, dict]:
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
    first and serve as controls for the others (`vitlens.landscape.estimator`). Under SHARE every rank
    evaluates all anchors (each needs their per-sample values) but only rank 0 returns their rows;
    the other points are dealt out.

    POINTS_PER_PASS > 1 evaluates that many points with one batched forward pass per batch
    (`PointEvaluator.evaluate_many`; exact mode only, statistical points stop one by one); 0 lets
    `PointEvaluator.points_per_pass` choose (1 on the CPU, a short probe on a GPU). The choice is in
    ``info["points_per_pass"]``.
    """
    if isinstance(points_per_pass, bool) or not isinstance(points_per_pass, (int, np.integer)) or points_per_pass < 0:
        raise VitlensError(f"points_per_pass must be an integer >= 0 (0 = choose), got {points_per_pass!r}")
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
        per_pass = int(points_per_pass) or (evaluator.points_per_pass() if todo else 1)
        per_pass = 1 if evaluator.statistical else per_pass
        # a job: anchor points one by one, then the other points PER_PASS at a time
        jobs = [([ij], True) for ij in anchor_list] + [(todo[k:k + per_pass], False)
                                                       for k in range(0, len(todo), per_pass)]
        try:
            for group, anchor in jobs:
                if anchor:
                    ij = group[0]
                    results = [evaluator.add_anchor(coords_of(ij))]
                    if ij in rows or rank != 0:
                        continue  # a resumed row, or another rank's to return
                else:
                    results = evaluator.evaluate_many([coords_of(ij) for ij in group])
                for ij, row in zip(group, results):
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
                moved_parameters=len(evaluator.offsets.names),
                points_per_pass=per_pass if evaluator.stacking else 1)  # 1: a stacked pass failed, fell back
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
