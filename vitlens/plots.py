"""Plotly figures from Results. Pages take these; they draw nothing of their own.

Depth plots shade blocks by kind as the paper does: MSA blocks blue, pooling/downsampling grey.
Every function takes one Result (or several, for the compare view) and returns a go.Figure.
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import plotly.express as px
import plotly.graph_objects as go

from .frames import high_frequency
from .result import Result

SHADE = {"msa": "rgba(66, 133, 244, 0.13)", "pool": "rgba(120, 120, 120, 0.16)"}
KIND_COLOURS = {"stem": "#7f7f7f", "conv": "#d62728", "msa": "#1f77b4", "mlp": "#2ca02c", "pool": "#8c564b",
                "head": "#9467bd"}


def shade_kinds(fig: go.Figure, blocks: pd.DataFrame, x: str = "depth") -> go.Figure:
    """Shade each MSA and pooling block's span on the depth axis (half-way to its neighbours)."""
    table = blocks.drop_duplicates("block").sort_values("block")
    xs = table[x].to_numpy(dtype=float)
    kinds = table["kind"].tolist()
    for i, kind in enumerate(kinds):
        if kind not in SHADE:
            continue
        left = (xs[i - 1] + xs[i]) / 2 if i > 0 else xs[i]
        right = (xs[i] + xs[i + 1]) / 2 if i + 1 < len(xs) else xs[i]
        if right <= left:
            right = left + 1e-3
        fig.add_vrect(x0=left, x1=right, fillcolor=SHADE[kind], line_width=0, layer="below")
    return fig


def _layout(fig: go.Figure, title: str, x: str, y: str) -> go.Figure:
    fig.update_layout(title=title, xaxis_title=x, yaxis_title=y, template="plotly_white",
                      margin=dict(l=40, r=20, t=50, b=40), legend=dict(orientation="h", y=-0.2))
    return fig


def depth_curve(result: Result, y: str, title: str, y_label: str | None = None, label: str | None = None,
                fig: go.Figure | None = None, shade: bool = True) -> go.Figure:
    """A per-block value vs normalised depth, markers coloured by block kind."""
    frame = result.frame.sort_values("block")
    fig = fig or go.Figure()
    name = label or result.meta.get("spec", {}).get("model", y)
    fig.add_trace(go.Scatter(x=frame["depth"], y=frame[y], mode="lines+markers", name=name,
                             marker=dict(color=[KIND_COLOURS.get(k, "#333") for k in frame["kind"]], size=8),
                             text=frame["name"] + " (" + frame["kind"] + ")",
                             hovertemplate="%{text}<br>depth %{x:.2f}<br>%{y:.4g}<extra></extra>"))
    if shade:
        shade_kinds(fig, frame)
    return _layout(fig, title, "normalised depth", y_label or y)


# ----------------------------------------------------------------------------- features

def fourier_curves(result: Result) -> go.Figure:
    """Fig 2a: relative log amplitude vs frequency, one line per block, coloured by depth."""
    frame = result.frame.sort_values(["block", "frequency_pi"])
    fig = go.Figure()
    blocks = frame.drop_duplicates("block")
    for row in blocks.itertuples():
        part = frame[frame.block == row.block]
        colour = px.colors.sample_colorscale("Plasma", [min(max(float(row.depth), 0.0), 1.0) * 0.9])[0]
        fig.add_trace(go.Scatter(x=part["frequency_pi"], y=part["relative_log_amplitude"], mode="lines",
                                 name=f"{row.name} ({row.kind})", line=dict(color=colour,
                                                                           dash="solid" if row.kind != "msa" else "dot")))
    return _layout(fig, "Relative log amplitude of Fourier-transformed feature maps", "frequency (×π)",
                   "Δ log amplitude")


def fourier_high_frequency(result: Result, fig: go.Figure | None = None, label: str | None = None) -> go.Figure:
    """Fig 8: the relative log amplitude at the highest frequency (π) vs normalised depth."""
    return depth_curve(Result(high_frequency(result.frame), result.meta), "relative_log_amplitude",
                       "High-frequency (π) log amplitude vs depth", "Δ log amplitude at π", label, fig)


def variance_curve(result: Result, fig: go.Figure | None = None, label: str | None = None) -> go.Figure:
    """Fig 9: feature-map variance vs normalised depth (log scale)."""
    fig = depth_curve(result, "variance", "Feature-map variance vs depth", "variance", label, fig)
    fig.update_yaxes(type="log")
    return fig


def lesion_bars(result: Result) -> go.Figure:
    """Accuracy drop when each block's residual branch is removed."""
    frame = result.frame.sort_values("block")
    fig = go.Figure(go.Bar(x=frame["name"], y=frame["accuracy_drop"] * 100,
                           marker_color=[KIND_COLOURS.get(k, "#333") for k in frame["kind"]],
                           hovertemplate="%{x}<br>accuracy drop %{y:.2f} pp<extra></extra>"))
    fig.update_xaxes(tickangle=-60)
    return _layout(fig, "Accuracy drop with one block removed", "block", "accuracy drop (percentage points)")


def noise_curve(result: Result, fig: go.Figure | None = None, label: str | None = None) -> go.Figure:
    """Fig 2b: accuracy change under band-limited noise vs the band's frequency."""
    frame = result.frame.sort_values("frequency_pi")
    y = "accuracy_change" if "accuracy_change" in frame else "accuracy_drop"
    fig = fig or go.Figure()
    fig.add_trace(go.Scatter(x=frame["frequency_pi"], y=frame[y] * 100, mode="lines+markers",
                             name=label or result.meta.get("spec", {}).get("model", "model")))
    return _layout(fig, "Robustness to frequency-band noise", "noise frequency (×π)",
                   "accuracy change (percentage points)" if y == "accuracy_change" else "accuracy drop (pp)")


def cka_heatmap(result: Result) -> go.Figure:
    frame = result.frame
    names = frame.drop_duplicates("i").sort_values("i")["name_i"].tolist()
    n = len(names)
    grid = np.full((n, n), np.nan)
    for row in frame.itertuples():
        grid[row.i, row.j] = row.cka
        grid[row.j, row.i] = row.cka
    fig = go.Figure(go.Heatmap(z=grid, x=names, y=names, colorscale="Viridis", zmin=0, zmax=1,
                               colorbar=dict(title="CKA")))
    fig.update_yaxes(autorange="reversed")
    return _layout(fig, "Linear CKA between block outputs", "block", "block")


# ----------------------------------------------------------------------------- evaluation

def reliability_diagram(result: Result) -> go.Figure:
    bins = result.frame[result.frame.metric == "reliability"].dropna(subset=["accuracy"])
    centres = (bins["lower"] + bins["upper"]) / 2
    fig = go.Figure()
    fig.add_trace(go.Bar(x=centres, y=bins["accuracy"], width=(bins["upper"] - bins["lower"]) * 0.95,
                         name="accuracy", customdata=bins["count"],
                         hovertemplate="confidence %{x:.2f}<br>accuracy %{y:.3f}<br>%{customdata} samples<extra></extra>"))
    fig.add_trace(go.Scatter(x=[0, 1], y=[0, 1], mode="lines", name="perfect calibration",
                             line=dict(dash="dash", color="grey")))
    return _layout(fig, "Reliability diagram", "confidence", "accuracy")


def error_vs_nll(points: pd.DataFrame) -> go.Figure:
    """Fig 1a: test error vs train NLL across models (one point per model)."""
    fig = px.scatter(points, x="train_nll", y="test_error", text="model", color="model")
    fig.update_traces(textposition="top center", marker=dict(size=12))
    return _layout(fig, "Test error vs train NLL", "train NLL", "test error")


# ----------------------------------------------------------------------------- hessian and landscape

def finite(values) -> np.ndarray:
    arr = np.asarray(values, dtype=float)
    return np.where(np.isfinite(arr), arr, np.nan)


def spectrum_density(result: Result, bins: int = 60) -> go.Figure:
    """The max-eigenvalue spectrum: histogram of per-minibatch top-k eigenvalues, sign kept."""
    frame = result.frame
    values = finite(frame["eigenvalue"])
    summary = result.meta.get("summary", {})
    fig = go.Figure(go.Histogram(x=values, nbinsx=bins, histnorm="probability density", name="eigenvalues"))
    fig.add_vline(x=0, line_dash="dash", line_color="grey")
    nep, ape = summary.get("nep"), summary.get("ape")
    title = "Hessian max-eigenvalue spectrum"
    if nep is not None and ape is not None:
        title += f" (NEP {float(nep):.3f}, APE {float(ape):.4g})"
    return _layout(fig, title, "eigenvalue", "density")


def eigen_bars(result: Result) -> go.Figure:
    frame = result.frame.sort_values("rank")
    fig = go.Figure(go.Bar(x=frame["rank"].astype(str), y=frame["eigenvalue"]))
    return _layout(fig, "Top Hessian eigenvalues (by magnitude, sign kept)", "rank", "eigenvalue")


def line(frame: pd.DataFrame, x: str, y: str, title: str, error: str | None = None,
         log_y: bool = False) -> go.Figure:
    fig = go.Figure(go.Scatter(x=frame[x], y=frame[y], mode="lines+markers",
                               error_y=dict(type="data", array=frame[error]) if error and error in frame else None))
    if log_y:
        fig.update_yaxes(type="log")
    return _layout(fig, title, x, y)


def surface(result: Result, value: str = "loss", log_scale: bool = False, kind: str = "surface",
            zrange: tuple[float, float] | None = None, title: str | None = None) -> go.Figure:
    """2D loss landscape as a 3D surface or a contour; non-finite points are gaps. ZRANGE fixes the
    colour scale (and the z axis), so two landscapes side by side share it."""
    frame = result.frame
    xs = np.sort(frame["x"].unique())
    ys = np.sort(frame["y"].unique())
    grid = frame.pivot_table(index="y", columns="x", values=value, aggfunc="first").reindex(index=ys, columns=xs)
    z = finite(grid.to_numpy())
    if "finite" in frame:
        bad = frame.pivot_table(index="y", columns="x", values="finite", aggfunc="first").reindex(index=ys, columns=xs)
        z = np.where(bad.to_numpy().astype(bool), z, np.nan)
    if log_scale:
        z = np.log10(np.where(z > 0, z, np.nan))
    label = f"log10 {value}" if log_scale else value
    scale = {} if zrange is None else dict(cmin=zrange[0], cmax=zrange[1])
    title = title or f"Loss landscape ({label})"
    if kind == "contour":
        contour = {} if zrange is None else dict(zmin=zrange[0], zmax=zrange[1])
        fig = go.Figure(go.Contour(x=xs, y=ys, z=z, colorscale="Viridis", colorbar=dict(title=label),
                                   contours=dict(showlabels=True), **contour))
        return _layout(fig, title, "direction 1", "direction 2")
    fig = go.Figure(go.Surface(x=xs, y=ys, z=z, colorscale="Viridis", colorbar=dict(title=label), **scale))
    zaxis = dict(title=label) if zrange is None else dict(title=label, range=list(zrange))
    fig.update_layout(scene=dict(xaxis_title="direction 1", yaxis_title="direction 2", zaxis=zaxis),
                      title=title, margin=dict(l=0, r=0, t=40, b=0))
    return fig


def value_range(results: list[Result], value: str = "loss", log_scale: bool = False) -> tuple[float, float]:
    """The finite range of VALUE over several landscapes (one colour scale for all of them)."""
    values = np.concatenate([finite(r.frame[value]) for r in results])
    if log_scale:
        values = np.log10(np.where(values > 0, values, np.nan))
    values = values[np.isfinite(values)]
    return (float(values.min()), float(values.max())) if len(values) else (0.0, 1.0)


def spectrum_overlay(results: list[Result], labels: list[str], bins: int = 60) -> go.Figure:
    """Several max-eigenvalue spectra on one axis (NEP/APE in the legend)."""
    fig = go.Figure()
    for result, label in zip(results, labels):
        summary = result.meta.get("summary", {})
        name = f"{label} (NEP {float(summary.get('nep', math.nan)):.3f}, APE {float(summary.get('ape', math.nan)):.3g})"
        fig.add_trace(go.Histogram(x=finite(result.frame["eigenvalue"]), nbinsx=bins, histnorm="probability density",
                                   name=name, opacity=0.55))
    fig.update_layout(barmode="overlay")
    fig.add_vline(x=0, line_dash="dash", line_color="grey")
    return _layout(fig, "Hessian max-eigenvalue spectra", "eigenvalue", "density")


def path_curve(result: Result, value: str = "loss") -> go.Figure:
    frame = result.frame.sort_values("x")
    return line(frame, "x", value, f"Loss along a 1D path ({value})")


def nan_to_none(x: float) -> float | None:
    return None if x is None or (isinstance(x, float) and math.isnan(x)) else x


# ----------------------------------------------------------------------------- figures the declarations name

def trace_estimates(result: Result) -> go.Figure:
    """Hessian trace estimates with their standard errors (`hessian --what trace`)."""
    return line(result.frame, "estimator", "estimate", "Hessian trace (± standard error)", "stderr")


def eigen_density(result: Result) -> go.Figure:
    """The eigenvalue density from stochastic Lanczos quadrature (`hessian --what density`)."""
    return line(result.frame, "grid", "density", "Eigenvalue density (stochastic Lanczos quadrature)")


def block_curvature(result: Result, value: str = "top_eigenvalue") -> go.Figure:
    """Each block's top eigenvalue or trace vs depth (`hessian --what blocks`)."""
    titles = {"top_eigenvalue": "Top eigenvalue of each block's Hessian", "trace": "Hessian trace of each block"}
    return depth_curve(result, value, titles.get(value, value), value.replace("_", " "))


VERDICT_COLOURS = {"holds": "#d9f2d9", "does not hold": "#f8d7da", "cannot tell": "#eeeeee"}


def findings_table(result: Result) -> go.Figure:
    """The findings scoreboard as a table: claim, model, verdict (coloured), numbers, the paper's figure."""
    frame = result.frame
    colours = [VERDICT_COLOURS.get(v, "white") for v in frame["verdict"]]
    columns = ["claim", "model", "verdict", "values", "figure"]
    fig = go.Figure(go.Table(
        columnwidth=[2, 3, 2, 6, 2],
        header=dict(values=columns, fill_color="#dddddd", align="left"),
        cells=dict(values=[frame[c].astype(str) for c in columns], align="left",
                   fill_color=[["white"] * len(frame), ["white"] * len(frame), colours,
                               ["white"] * len(frame), ["white"] * len(frame)])))
    fig.update_layout(title="The paper's findings", margin=dict(l=10, r=10, t=40, b=10),
                      height=120 + 32 * len(frame))
    return fig


def bar(result: Result, x: str, y: str, title: str = "") -> go.Figure:
    """A bar per row of the Result's frame: column Y against column X (any analysis' simple view)."""
    fig = go.Figure(go.Bar(x=result.frame[x].astype(str), y=result.frame[y]))
    return _layout(fig, title or f"{y} by {x}", x, y)


# ----------------------------------------------------------------------------- training

def training_curves(result: Result) -> go.Figure:
    """An experiment cell's kept epochs: train and test NLL (left axis), test error (right axis)."""
    frame = result.frame.sort_values("epoch")
    spec = result.meta.get("spec") or {}
    fig = go.Figure()
    for column, name, dash in (("train_nll", "train NLL", "solid"), ("test_nll", "test NLL", "dot")):
        if column in frame:
            fig.add_trace(go.Scatter(x=frame["epoch"], y=frame[column], mode="lines+markers", name=name,
                                     line=dict(dash=dash)))
    if "test_error" in frame:
        fig.add_trace(go.Scatter(x=frame["epoch"], y=frame["test_error"], mode="lines+markers", name="test error",
                                 yaxis="y2", line=dict(color="#d62728")))
    fig.update_layout(yaxis2=dict(title="test error", overlaying="y", side="right", range=[0, 1]))
    fraction = f" · {frame['fraction'].iloc[0]:g} of the data" if "fraction" in frame and len(frame) else ""
    return _layout(fig, f"Training of {spec.get('model', 'the model')}{fraction}", "epoch", "NLL")
