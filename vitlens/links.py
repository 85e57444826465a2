"""Dashboard links: the relative URL of the page that shows a request's Result, built from the
request's field declarations (`vitlens.request`) and the analysis' page (`vitlens.analyses.Page`).
The dashboard reads the same parameters back (`vitlens.ui`)."""
from __future__ import annotations

from urllib.parse import urlencode

from .declarations import get_analysis
from .request import JobSpec, request_option, request_query

COMPARE_PAGE = "Compare"


def _query(spec: JobSpec) -> dict:
    """The request's fields as URL parameters (the checkpoint stays out: a link names no server path;
    "all" samples stay out: the page's default stands)."""
    query = request_query(spec, skip_defaults=("model_args", "checkpoint", "samples"))
    if spec.samples is not None:
        query["samples"] = request_option("samples").text(spec.samples)
    query.pop("checkpoint", None)
    return query


def page_params(analysis: str, values: dict) -> dict:
    """The params the analysis' page sends for VALUES: the options it draws, those that apply."""
    declared = get_analysis(analysis)
    current = dict(declared.defaults)
    shown = {}
    for name in declared.shown:  # what its page draws (`page_options` in the declaration)
        opt = declared.option(name)
        if opt.applies and not opt.applies_to(current):
            continue
        current[name] = shown[name] = values.get(name, opt.default)
    return shown


def link(spec: JobSpec) -> str:
    """Relative dashboard URL of the page showing SPEC's Result, with the selection and its options."""
    analysis = get_analysis(spec.analysis)
    query = _query(spec)
    for name, value in spec.params.items():
        query[name] = analysis.option(name).text(value) if name in {o.name for o in analysis.options} else value
    return f"{analysis.page.slug if analysis.page else ''}?{urlencode(query)}"


def compare_link(base: JobSpec, models: list[str], view: str) -> str:
    """The Compare page overlaying VIEW of MODELS, with BASE's data settings."""
    query = dict(_query(base), model=models[0], compare=",".join(models), view=view)
    query.pop("model_args", None)
    return f"{COMPARE_PAGE}?{urlencode(query)}"


