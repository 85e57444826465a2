"""Sharpness summaries of a loss surface or 1D path: curvature at the centre, loss rise nearby."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd

from ..errors import VitlensError


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
