"""An analysis' figures, from its declaration (`register_analysis(figures=...)`): the Plotly figures
that draw a Result, in order. The dashboard pages, `Result.figures()`, `vitlens run --figure`, the
HTML report and the W&B export all draw these.

Files: `.html` is self-contained (Plotly's JavaScript inlined, opens offline); `.png`, `.svg` and
`.pdf` go through kaleido (plotly's static export), which drives a Chromium: the system's
(Debian's `chromium`); without one, one line says what to install.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

import plotly.graph_objects as go

from . import plots
from .declarations import Figure, get_analysis
from .errors import VitlensError
from .result import Result
from .version import __version__

FORMATS = (".html", ".png", ".svg", ".pdf")
COMPARE_VIEWS = {"variance": plots.variance_curve, "fourier": plots.fourier_high_frequency,
                 "noise": plots.noise_curve}


def declared(result: Result) -> list[Figure]:
    """The figures RESULT's analysis declares for the options it was computed with."""
    name = result.meta.get("analysis") or (result.meta.get("spec") or {}).get("analysis")
    if not name:
        return []
    analysis = get_analysis(name)
    params = result.meta.get("params") or analysis.parse((result.meta.get("spec") or {}).get("params") or {})
    return analysis.figures_for(params)


def caption(result: Result) -> str:
    """What made RESULT, in one line: model, data, samples, convention, vitlens version."""
    meta = result.meta
    if meta.get("reference"):
        return meta.get("caption") or f"reference: {meta.get('source', '')}"
    spec = meta.get("spec") or {}
    convention = (meta.get("convention") or {}).get("name") or "vitlens"
    version = (meta.get("versions") or {}).get("vitlens", __version__)
    samples = "all" if spec.get("samples") is None else spec.get("samples")
    checkpoint = f" + {Path(spec['checkpoint']).name}" if spec.get("checkpoint") else ""
    return (f"{spec.get('model', '?')}{checkpoint} · {spec.get('dataset', '?')}/{spec.get('split', '?')} · "
            f"{samples} samples · seed {spec.get('seed', '?')} · convention {convention} · vitlens {version}")


def with_caption(fig: go.Figure, text: str) -> go.Figure:
    """FIG with TEXT as a caption under the plot."""
    fig.add_annotation(text=text, xref="paper", yref="paper", x=0, y=-0.16, xanchor="left", yanchor="top",
                       showarrow=False, font=dict(size=10, color="#555555"))
    bottom = max((fig.layout.margin.b or 0), 70)
    fig.update_layout(margin=dict(b=bottom))
    return fig


def figures(result: Result, captioned: bool = False) -> list[go.Figure]:
    """RESULT's figures as Plotly figures, in the declared order (CAPTIONED: with `caption`)."""
    drawn = [getattr(plots, f.plot)(result, **f.params) for f in declared(result)]
    return [with_caption(fig, caption(result)) for fig in drawn] if captioned else drawn


def compare(results: list[Result], view: str | None = None, labels: list[str] | None = None) -> go.Figure:
    """Several Results of one analysis overlaid on normalised depth, as the Compare page draws them
    (variance, fourier's high-frequency value, or noise robustness vs frequency)."""
    if not results:
        raise VitlensError("compare needs at least one Result")
    names = {r.meta.get("analysis") for r in results}
    view = view or next(iter(names))
    if len(names) > 1 or view not in COMPARE_VIEWS:
        raise VitlensError(f"compare overlays Results of one of {', '.join(COMPARE_VIEWS)}; got {sorted(map(str, names))}")
    fig = go.Figure()
    for k, result in enumerate(results):
        label = labels[k] if labels else (result.meta.get("spec") or {}).get("model", f"result {k + 1}")
        COMPARE_VIEWS[view](result, fig, label=label)
    if view == "variance":
        fig.update_yaxes(type="log")
    return fig


def static_export_browser() -> str | None:
    """The Chromium kaleido will drive (BROWSER_PATH, else the first one on PATH or in the usual
    places), or None."""
    try:
        from choreographer.browsers.chromium import Chromium  # deferred: kaleido's dependency, static formats only
    except ImportError:
        return None
    found = Chromium.find_browser(skip_local=False)
    return found if found and os.path.exists(found) else None


_PLOTLYJS_SENT = False  # this kernel has shown one figure with plotly.js inlined


def mimebundle(fig: go.Figure) -> dict:
    """A figure for Jupyter: Plotly's JSON (JupyterLab draws it natively) and HTML that works
    offline (plotly.js inlined with the first figure of the kernel, then reused)."""
    global _PLOTLYJS_SENT
    html = fig.to_html(full_html=False, include_plotlyjs=not _PLOTLYJS_SENT)
    _PLOTLYJS_SENT = True
    return {"application/vnd.plotly.v1+json": fig.to_plotly_json(), "text/html": html}


def save(fig: go.Figure, path: str | Path) -> Path:
    """Write FIG to PATH; the format follows the suffix (`FORMATS`). One-line errors."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in FORMATS:
        raise VitlensError(f"a figure file must end in {', '.join(FORMATS)}, got '{path.name}'")
    if suffix == ".html":
        fig.write_html(path, include_plotlyjs=True, full_html=True)
        return path
    browser = static_export_browser()
    if browser is None:
        raise VitlensError(f"{suffix} figures need a Chromium for kaleido and none was found (BROWSER_PATH or "
                           "PATH); install one (Debian: apt-get install chromium) or write .html")
    try:
        data = fig.to_image(format=suffix[1:])
    except Exception as err:  # a browser that cannot start, or kaleido missing
        chain, text = err, ""
        while chain is not None and not text:
            text, chain = str(chain).strip(), chain.__cause__ or chain.__context__
        reason = f"{type(err).__name__}: {text or 'no message'}".splitlines()[0][:200]
        raise VitlensError(f"cannot draw {path.name} with the browser {browser} ({reason}); .html always "
                           "works") from None
    path.write_bytes(data)
    return path


Result.draw_with(sys.modules[__name__])  # Result.figures() and Jupyter's display draw with these
