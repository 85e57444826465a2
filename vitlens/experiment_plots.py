"""The paper's figures across training runs, drawn from an experiment's table (one row per cell x kept
epoch; `vitlens.experiments.Sweep.table`). Each figure is declared in `FIGURES` with the columns it
needs; `figures(table)` draws those the table can show.

  * `spectrum_over_epochs` (Fig 4): NEP, APE and the largest eigenvalue of the max-eigenvalue spectrum
    vs epoch, one line per data fraction, one column per model.
  * `error_vs_train_nll` (Fig 3): test error vs train NLL of every kept checkpoint, one trajectory per
    cell (the last epoch marked), coloured by data fraction.
  * `calibration_by_recipe`: ECE (10 bins) at the last epoch per recipe and model.
  * `by_kernel`: test error and NEP at the last epoch vs ConvViT's kernel size.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Callable

import pandas as pd
import plotly.graph_objects as go
from plotly.colors import sample_colorscale
from plotly.subplots import make_subplots

CELL = ["model", "model_args", "fraction", "recipe", "seed"]


def _colours(values) -> dict:
    values = sorted(set(values))
    points = [0.15 + 0.7 * i / max(len(values) - 1, 1) for i in range(len(values))]
    return dict(zip(values, sample_colorscale("Viridis", points)))


def _label(cell: pd.Series | dict) -> str:
    args = json.loads(cell["model_args"]) if isinstance(cell["model_args"], str) and cell["model_args"] else {}
    shown = ", ".join(f"{k}={v}" for k, v in args.items() if k not in ("pretrained", "drop_path_rate"))
    return f"{cell['model']}{f' ({shown})' if shown else ''}"


def _finals(table: pd.DataFrame) -> pd.DataFrame:
    return table[table["epoch"].notna()].sort_values("epoch").groupby(CELL, sort=False).tail(1)


def spectrum_over_epochs(table: pd.DataFrame) -> go.Figure:
    table = table[table["epoch"].notna()].assign(label=lambda f: f.apply(_label, axis=1))
    models = list(dict.fromkeys(table["label"]))
    rows = [("nep", "NEP"), ("ape", "APE (log)"), ("max_eigenvalue", "largest eigenvalue (log)")]
    fig = make_subplots(rows=3, cols=len(models), shared_xaxes=True, subplot_titles=models,
                        vertical_spacing=0.06, horizontal_spacing=0.06)
    colours = _colours(table["fraction"])
    for c, model in enumerate(models, start=1):
        for fraction, cells in table[table["label"] == model].groupby("fraction"):
            for (seed, recipe), cell in cells.groupby(["seed", "recipe"], sort=False):
                cell = cell.sort_values("epoch")
                for r, (column, _) in enumerate(rows, start=1):
                    fig.add_trace(go.Scatter(
                        x=cell["epoch"], y=cell[column], mode="lines+markers", line=dict(color=colours[fraction]),
                        name=f"{100 * fraction:g}% of the data", legendgroup=f"{fraction:g}",
                        showlegend=bool(c == 1 and r == 1 and seed == cells["seed"].min()),
                        hovertemplate=f"{model} · {fraction:g} · {recipe} · seed {seed}<br>epoch %{{x}}<br>"
                                      f"{column} %{{y:.4g}}<extra></extra>"), row=r, col=c)
    for r, (column, title) in enumerate(rows, start=1):
        fig.update_yaxes(title_text=title, row=r, col=1)
        if column != "nep":
            fig.update_yaxes(type="log", dtick=1, exponentformat="power", row=r)
    fig.update_yaxes(range=[0, 1], row=1)
    fig.update_xaxes(title_text="epoch", row=3)
    count = table["count"].dropna() if "count" in table else pd.Series(dtype=float)
    pooled = f"<br><sup>each point pools {int(count.min())} eigenvalues (top-k of each minibatch): NEP moves in steps " \
             f"of {1 / count.min():.2g}</sup>" if len(count) and count.min() > 0 else ""
    fig.update_layout(title="Hessian max-eigenvalue spectrum over training, per data fraction (Fig 4)" + pooled,
                      template="plotly_white", height=720, width=max(520, 380 * len(models)),
                      legend=dict(title="data", orientation="h", y=-0.1), margin=dict(l=70, r=20, t=100, b=70))
    return fig


def error_vs_train_nll(table: pd.DataFrame) -> go.Figure:
    table = table[table["epoch"].notna()].assign(label=lambda f: f.apply(_label, axis=1))
    colours = _colours(table["fraction"])
    symbols = dict(zip(dict.fromkeys(table["label"]), ["circle", "square", "diamond", "triangle-up", "x", "star"] * 9))
    fig = go.Figure()
    for keys, cell in table.groupby(CELL, sort=False):
        cell = cell.sort_values("epoch")
        label, fraction = _label(dict(zip(CELL, keys))), keys[2]
        sizes = [6] * (len(cell) - 1) + [13]  # the last epoch marked
        fig.add_trace(go.Scatter(
            x=cell["train_nll"], y=cell["test_error"], mode="lines+markers", name=f"{label} · {100 * fraction:g}%",
            line=dict(color=colours[fraction], width=1.5),
            marker=dict(symbol=symbols[label], size=sizes, color=colours[fraction]),
            text=[f"epoch {int(e)}" for e in cell["epoch"]],
            hovertemplate=f"{label} · {fraction:g} of the data<br>%{{text}}<br>train NLL %{{x:.3f}}<br>"
                          "test error %{y:.3f}<extra></extra>"))
    fig.update_layout(title="Test error vs train NLL of every kept checkpoint (Fig 3; large marker: last epoch)",
                      xaxis_title="train NLL (clean training subset)", yaxis_title="test error",
                      template="plotly_white", height=520, width=760, legend=dict(title="model · data"),
                      margin=dict(l=70, r=20, t=70, b=60))
    fig.update_yaxes(range=[0, 1])
    return fig


def calibration_by_recipe(table: pd.DataFrame) -> go.Figure:
    last = _finals(table).assign(label=lambda f: f.apply(_label, axis=1))
    fig = go.Figure()
    for recipe, cells in last.groupby("recipe", sort=False):
        means = cells.groupby("label", sort=False)["ece"].mean()
        fig.add_trace(go.Bar(x=list(means.index), y=list(means.values), name=recipe))
    fig.update_layout(title="Expected calibration error (10 bins) at the last epoch, per recipe",
                      yaxis_title="ECE", template="plotly_white", barmode="group", height=460, width=720,
                      legend=dict(title="recipe"), margin=dict(l=70, r=20, t=70, b=60))
    return fig


def by_kernel(table: pd.DataFrame) -> go.Figure:
    last = _finals(table)
    last = last.assign(kernel=last["model_args"].map(lambda a: json.loads(a or "{}").get("kernel_size")))
    last = last[last["kernel"].notna()].sort_values("kernel")
    fig = make_subplots(specs=[[{"secondary_y": True}]])
    fig.add_trace(go.Scatter(x=last["kernel"], y=last["test_error"], mode="lines+markers", name="test error"))
    if "nep" in last:
        fig.add_trace(go.Scatter(x=last["kernel"], y=last["nep"], mode="lines+markers", name="NEP",
                                 line=dict(dash="dot")), secondary_y=True)
    fig.update_xaxes(title_text="ConvViT kernel size (k x k neighbourhood)", tickvals=sorted(last["kernel"].unique()))
    fig.update_yaxes(title_text="test error", secondary_y=False)
    fig.update_yaxes(title_text="NEP", secondary_y=True)
    fig.update_layout(title="ConvViT locality: last-epoch test error and NEP vs kernel size", template="plotly_white",
                      height=460, width=720, margin=dict(l=70, r=70, t=70, b=60))
    return fig


@dataclass(frozen=True)
class ExperimentFigure:
    name: str
    draw: Callable[[pd.DataFrame], go.Figure]
    needs: tuple  # columns the table must have (with values)
    applies: Callable[[pd.DataFrame], bool] = lambda table: True


FIGURES = (
    ExperimentFigure("spectrum_over_epochs", spectrum_over_epochs, ("epoch", "nep", "ape", "max_eigenvalue")),
    ExperimentFigure("error_vs_train_nll", error_vs_train_nll, ("epoch", "train_nll", "test_error")),
    ExperimentFigure("calibration_by_recipe", calibration_by_recipe, ("ece",),
                     lambda table: table["recipe"].nunique() > 1),
    ExperimentFigure("by_kernel", by_kernel, ("test_error",),
                     lambda table: table["model_args"].str.contains('"kernel_size"').sum() > 1),
)


def figures(table: pd.DataFrame) -> list[tuple[str, go.Figure]]:
    """(name, figure) of every declared figure TABLE has the columns and axes for."""
    drawn = []
    for figure in FIGURES:
        if all(c in table and table[c].notna().any() for c in figure.needs) and figure.applies(table):
            drawn.append((figure.name, figure.draw(table)))
    return drawn
