"""An analysis' figures, from its declaration (`register_analysis(figures=...)`): the Plotly figures
that draw a Result, in order. The dashboard pages, `Result.figures()` and every export draw these."""
from __future__ import annotations

import plotly.graph_objects as go

from . import plots
from .analyses import Figure, get_analysis
from .result import Result


def declared(result: Result) -> list[Figure]:
    """The figures RESULT's analysis declares for the options it was computed with."""
    name = result.meta.get("analysis") or (result.meta.get("spec") or {}).get("analysis")
    if not name:
        return []
    analysis = get_analysis(name)
    params = result.meta.get("params") or analysis.parse((result.meta.get("spec") or {}).get("params") or {})
    return analysis.figures_for(params)


def figures(result: Result) -> list[go.Figure]:
    """RESULT's figures as Plotly figures, in the declared order."""
    return [getattr(plots, f.plot)(result, **f.params) for f in declared(result)]
