"""`vitlens report`: one self-contained HTML file with the findings scoreboard, each claim's evidence
figure and every analysis' figures per model, with the requests and versions that made them.

The report is the findings request (`vitlens run findings --models A,B,...` with the same data
settings: the same cached Results) plus each model's evaluation; whatever is not cached yet is
computed (with a progress bar on the command line). Plotly's JavaScript is inlined once, so the file
opens offline; the paper's own Fig 1b landscapes (`vitlens.reference`) stand beside the models'.
"""
from __future__ import annotations

import html
import json
import sys
import time
from dataclasses import dataclass, field, replace

import pandas as pd
import plotly.graph_objects as go
import plotly.offline
import torch

from . import plots
from .version import __version__
from .declarations import get_analysis
from .analyses.findings import needed, sub_specs
from .claims import CLAIMS
from .engine import run
from .errors import VitlensError
from .figures import COMPARE_VIEWS, caption, compare, figures
from .progress import Progress
from .store.reference import list_references, reference
from .request import JobSpec
from .result import Result


@dataclass
class Report:
    """What a report holds: the scoreboard, every model's Results (by analysis), and the requests."""

    findings: Result
    results: dict[str, dict[str, Result]] = field(default_factory=dict)  # model -> analysis -> Result
    seconds: float = 0.0

    @property
    def models(self) -> list[str]:
        return list(self.results)


def findings_spec(base: JobSpec, models: list[str], options: dict | None = None) -> JobSpec:
    """The findings request `vitlens run findings --models A,B ...` makes with BASE's data settings."""
    return replace(base, analysis="findings", params=dict(options or {}, models=",".join(models)))


def gather(base: JobSpec, models: list[str], options: dict | None = None, verbose: bool = False) -> Report:
    """Compute (or fetch from the cache) everything a report of MODELS shows."""
    if not models:
        raise VitlensError("a report needs at least one --model")
    start = time.perf_counter()
    spec = findings_spec(base, models, options)
    params = get_analysis("findings").parse(spec.params)
    board, _ = run(spec, verbose=verbose)
    report = Report(board)
    progress = Progress(len(models) * (len(needed()) + 1), "report", stream=sys.stderr if verbose else None)
    for model in models:
        subs = sub_specs(spec, model, params)
        subs["evaluate"] = replace(next(iter(subs.values())), analysis="evaluate", params={})
        report.results[model] = {}
        for name, sub in subs.items():
            try:
                report.results[model][name] = run(sub)[0]
            except VitlensError as err:  # shown in the report where the figure would be
                report.results[model][name] = Result(pd.DataFrame(), {"analysis": name, "error": str(err)})
            progress.update(1, f"{name} on {model}")
    report.seconds = time.perf_counter() - start
    return report


def _figure_html(fig: go.Figure) -> str:
    return fig.to_html(full_html=False, include_plotlyjs=False, default_width="100%", default_height="460px")


def _ok(result: Result) -> bool:
    return not result.meta.get("error") and len(result.frame) > 0


def evidence_figures(report: Report, claim: str) -> list[go.Figure]:
    """The figure(s) behind CLAIM (its declared evidence analysis), all models on one axis where the
    analysis allows it."""
    analysis = CLAIMS[claim].evidence
    pairs = [(m, r[analysis]) for m, r in report.results.items() if _ok(r[analysis])]
    if not pairs:
        return []
    labels, results = [m for m, _ in pairs], [r for _, r in pairs]
    if analysis in COMPARE_VIEWS:
        return [compare(results, analysis, labels)]
    if analysis == "hessian":
        return [plots.spectrum_overlay(results, labels)]
    if analysis == "landscape":  # each model's surface and the paper's, one colour scale
        papers = [reference(r.name) for r in list_references()]
        everything = results + papers
        zrange = plots.value_range(everything)
        names = labels + [f"paper: {p.meta['model']} (CIFAR-100)" for p in papers]
        return [plots.surface(r, zrange=zrange, title=f"Loss landscape: {n}") for r, n in zip(everything, names)]
    return [fig for r in results for fig in figures(r, captioned=True)]


def _table(frame, columns: list[str]) -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    rows = "".join("<tr>" + "".join(f"<td class='{html.escape(str(r.get('verdict', '')).replace(' ', '-'))}'>"
                                    f"{html.escape(str(r[c]))}</td>" for c in columns) + "</tr>"
                   for r in frame.to_dict("records"))
    return f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>"


STYLE = """body{font-family:system-ui,sans-serif;max-width:1200px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;width:100%;font-size:13px}td,th{border:1px solid #ccc;padding:4px;text-align:left}
td.holds{background:#d9f2d9}td.does-not-hold{background:#f8d7da}td.cannot-tell{background:#eee}
.caption{color:#555;font-size:12px}pre{background:#f6f6f6;padding:8px;overflow-x:auto;font-size:12px}"""


def render(report: Report) -> str:
    """The report as one self-contained HTML document."""
    board = report.findings
    tally = board.meta.get("summary", {})
    parts = [f"<h1>vitlens report: {html.escape(', '.join(report.models))}</h1>",
             f"<p class='caption'>vitlens {html.escape(__version__)} · torch {html.escape(torch.__version__)} · "
             f"made {time.strftime('%Y-%m-%d %H:%M:%S')} · {tally.get('holds', 0)} hold · "
             f"{tally.get('does not hold', 0)} do not hold · {tally.get('cannot tell', 0)} cannot tell</p>",
             "<h2>The paper's findings</h2>",
             _table(board.frame, ["claim", "model", "verdict", "values", "reason", "figure"])]
    parts.append("<h2>Evidence per claim</h2>")
    for claim in CLAIMS.values():
        parts.append(f"<h3 id='claim-{html.escape(claim.id)}'>{html.escape(claim.name)}: "
                     f"{html.escape(claim.statement)} ({html.escape(claim.figure)})</h3>"
                     f"<p class='caption'>rows <code>{html.escape(claim.id)}</code> of the table above; "
                     f"evidence: {html.escape(claim.evidence)}</p>")
        figs = evidence_figures(report, claim.id)
        parts += [_figure_html(f) for f in figs] or ["<p>no Result to draw</p>"]
    parts.append("<h2>Every analysis per model</h2>")
    for model, results in report.results.items():
        parts.append(f"<h3 id='model-{html.escape(model)}'>{html.escape(model)}</h3>")
        for name, result in results.items():
            parts.append(f"<h4>{html.escape(name)}</h4>")
            if not _ok(result):
                parts.append(f"<p>failed: {html.escape(str(result.meta.get('error', 'no rows')))}</p>")
                continue
            parts += [_figure_html(f) for f in figures(result, captioned=True)]
            parts.append(f"<p class='caption'>{html.escape(caption(result))}</p>")
            request = {k: result.meta.get(k) for k in ("spec", "params", "versions", "seconds", "device")}
            parts.append(f"<details><summary>request and versions</summary><pre>"
                         f"{html.escape(json.dumps(request, indent=1, sort_keys=True, default=str))}</pre></details>")
    papers = ", ".join(r.name for r in list_references())
    parts.append(f"<p class='caption'>The paper's landscapes ({html.escape(papers)}): "
                 f"{html.escape(reference(list_references()[0].name).meta['source'])}.</p>")
    body = "\n".join(parts)
    return (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>vitlens report</title>"
            f"<style>{STYLE}</style><script type='text/javascript'>{plotly.offline.get_plotlyjs()}</script>"
            f"</head><body>{body}</body></html>")
