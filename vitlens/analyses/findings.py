"""The paper's findings, checked on any model: a scoreboard over the analyses vitlens already has.

`vitlens run findings --models demo_resnet_deep,demo_vit_deep,demo_alternet` runs, for every model,
the sub-analyses the declared claims need (`vitlens.claims.CLAIMS`, `needed`) as sub-requests
(`ctx.run`: one JobSpec each, with the base spec's data set, split, samples, batch size, seed and
device; cached Results are reused, and each sub-Result is the one the linked dashboard page shows),
then applies each claim's small pure rule (`vitlens.claims`; the rules and thresholds are described
there and in README 'Findings').
The sub-analyses' options keep their own declarations (bounds, limits): findings' options are
theirs under a prefixed name where two would clash.
"""
from __future__ import annotations

from dataclasses import replace
from typing import Callable

from ..claims import CLAIMS, group_of, ok, scoreboard, tally
from ..context import Context
from ..errors import VitlensError
from ..models import blocks as model_blocks
from ..models.sizing import Bound
from ..links import page_params
from ..options import Option
from ..request import JobSpec, request_option
from ..result import Result
from . import Figure, Page, register_analysis
from .hessian import OPTIONS as HESSIAN_OPTIONS
from .landscape import OPTIONS as LANDSCAPE_OPTIONS
from .noise import OPTIONS as NOISE_OPTIONS

DEFAULT_MODELS = "demo_resnet_deep,demo_vit_deep,demo_alternet"
MAX_MODELS = Bound(1, 8, "VITLENS_MAX_MODELS")


def _sub_option(options, name: str, default, help: str, rename: str | None = None) -> Option:
    """A sub-analysis' option as findings declares it: the same type, bounds and limit, another default."""
    declared = next(o for o in options if o.name == name)
    return replace(declared, name=rename or name, default=default, help=help, applies={})


OPTIONS = [
    Option("models", str, DEFAULT_MODELS, "comma-separated model specs to check (the base --model's "
           "--model-args/--checkpoint apply to its own entry; at most VITLENS_MAX_MODELS, default 8)",
           check=lambda text: parse_models(text)),
    _sub_option(HESSIAN_OPTIONS, "top_k", 5, "Hessian spectrum: eigenvalues per minibatch"),
    _sub_option(HESSIAN_OPTIONS, "minibatches", 8, "Hessian spectrum: minibatches (small for CPU; 0 = all)"),
    _sub_option(HESSIAN_OPTIONS, "minibatch", 16, "Hessian spectrum: minibatch size (paper: 16)"),
    _sub_option(LANDSCAPE_OPTIONS, "grid", 11, "loss landscape: points per axis (small for CPU; paper: 21)"),
    _sub_option(LANDSCAPE_OPTIONS, "range", 1.0, "loss landscape: the grid covers [-range, range]"),
    _sub_option(NOISE_OPTIONS, "frequencies", 11, "noise robustness: frequencies in [0, pi]",
                rename="noise_frequencies"),
    _sub_option(NOISE_OPTIONS, "eps", 0.1, "noise robustness: noise amplitude", rename="noise_eps"),
]


def scoreboard_spec(base, params: dict | None = None):
    """The findings request the Findings page makes for BASE's data settings (base model demo_resnet,
    the page's default), so the landing page and the page share one cached Result."""
    return replace(base, analysis="findings", model="demo_resnet", model_args={}, checkpoint=None,
                   params=page_params("findings", params or {}))


def parse_models(text: str, what: str = "--models") -> list[str]:
    """A comma-separated list of model specs: each valid, none twice, at most `VITLENS_MAX_MODELS`
    (default 8: every model costs the sub-analyses its claims need)."""
    models = list(dict.fromkeys(m.strip() for m in text.split(",") if m.strip()))
    if not models:
        raise VitlensError(f"{what} needs at least one model spec")
    most = MAX_MODELS.limit()
    if len(models) > most:
        raise VitlensError(f"{what} names {len(models)} models, at most {most:g} (raise it with {MAX_MODELS.env})")
    for model in models:
        request_option("model").parse(model)
    return models


# the options findings passes to a sub-analysis (from its own, `OPTIONS`); the others run with their
# page defaults, so each sub-Result is the one its linked page shows
SUB_OPTIONS = dict(
    hessian=lambda p: dict(what="spectrum", top_k=p["top_k"], minibatches=p["minibatches"], minibatch=p["minibatch"]),
    landscape=lambda p: dict(grid=p["grid"], range=p["range"]),
    noise=lambda p: dict(frequencies=p["noise_frequencies"], eps=p["noise_eps"]),
)


def needed() -> list[str]:
    """The sub-analyses the declared claims need, in the order the claims first name them."""
    return list(dict.fromkeys(a for claim in CLAIMS.values() for a in claim.needs))


def sub_specs(base, model: str, params: dict) -> dict:
    """The JobSpec of every sub-analysis of MODEL the claims need (data, seed and device of BASE)."""
    own = model == base.model
    common = replace(base, model=model, model_args=dict(base.model_args) if own else {},
                     checkpoint=base.checkpoint if own else None)
    return {name: replace(common, analysis=name,
                          params=page_params(name, SUB_OPTIONS[name](params) if name in SUB_OPTIONS else {}))
            for name in needed()}


def gather(base, models: list[str], params: dict, runner: Callable, progress=None) -> dict:
    """{model: {analysis: (spec, Result or error text)}}; RUNNER(spec) -> Result."""
    out = {}
    for model in models:
        out[model] = {}
        for name, spec in sub_specs(base, model, params).items():
            try:
                out[model][name] = (spec, runner(spec))
            except VitlensError as err:
                out[model][name] = (spec, str(err).splitlines()[0])
            if progress is not None:
                progress.update(1, f"{name} on {model}")
    return out


def downsampling_blocks(ctx: Context, spec: JobSpec) -> list[str]:
    """Names of the blocks of SPEC's model that downsample (for the lesion rule's like-with-like check)."""
    try:
        return [b.name for b in model_blocks(ctx.build_model(spec)) if b.downsamples]
    except Exception:  # the rule then compares every stage; the reason says nothing about downsampling
        return []


@register_analysis("findings", "the paper's findings checked on several models, from the other analyses' "
                   "(cached) Results: a verdict, its numbers and a link per claim", OPTIONS,
                   conventions="rules and thresholds in vitlens/claims/rules.py and README 'Findings'",
                   lane="heavy",
                   page=Page("Findings", "Findings", 0, custom=True,
                             labels={"models": "models (comma-separated specs)", "top_k": "spectrum: top k",
                                     "minibatches": "spectrum: minibatches", "minibatch": "spectrum: minibatch size",
                                     "grid": "landscape: grid points per axis", "range": "landscape: range",
                                     "noise_frequencies": "noise: frequencies", "noise_eps": "noise: eps"},
                             widget_args={"range": {"step": 0.1}, "noise_eps": {"step": 0.05}},
                             caption=("The claims of Park & Kim (ICLR 2022) evaluated on the models below from "
                                      "vitlens' own analyses (cached Results are reused). Each row: the numbers, a "
                                      "verdict (holds / does not hold / cannot tell) with its reason, the paper's "
                                      "figure, and a link to the page and parameters behind it. The rules are in "
                                      "README 'Findings'. On the embedded digits set and tiny demo models this "
                                      "checks the rules, not the paper's CIFAR-100 numbers.")),
                   figures=[Figure("findings_table")], over_checkpoints=False)
def findings(ctx: Context, params: dict) -> Result:
    models = parse_models(params["models"])
    base = ctx.spec
    progress = ctx.progress(len(models) * len(needed()), "findings")
    evidence = gather(base, models, params, ctx.run, progress)
    downsamples = {m: downsampling_blocks(ctx, evidence[m]["lesion"][0]) for m in models}
    frame = scoreboard(base, evidence, downsamples)
    summary = dict(tally(frame), models=models,
                   groups={m: group_of(set(r[1].frame["kind"])) if ok(r) else "unknown"
                           for m, g in evidence.items() for r in [g["variance"]]})
    return Result(frame, {"analysis": "findings", "summary": summary,
                          "sub_results": {m: {a: e[0].analysis if ok(e) else e[1] for a, e in g.items()}
                                          for m, g in evidence.items()}})


# The README scoreboard (tests/test_findings.py recomputes it): the shipped demos, small CPU settings.
README_SETTINGS = dict(samples=128, params=dict(minibatches=4, grid=7, noise_frequencies=6))


def readme_spec() -> JobSpec:
    params = dict(page_params("findings", {}), **README_SETTINGS["params"])
    return JobSpec(analysis="findings", model="demo_resnet", dataset="digits", split="test",
                   samples=README_SETTINGS["samples"], seed=0, device="cpu", params=params)
