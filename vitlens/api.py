"""The one-call Python API, for notebooks and scripts.

    import vitlens
    r = vitlens.run("fourier", model="demo_vit", dataset="digits", samples=256, resolution=8)
    r                      # in Jupyter: the main figure, inline
    r.figures()            # every figure the analysis declares (Plotly)
    r.frame                # the tidy data
    vitlens.compare([vitlens.run("variance", model=m) for m in ("demo_resnet", "demo_vit")])
    vitlens.reference("paper:vit_ti_cifar100_landscape")   # the paper's own Fig 1b data

The request's fields and the analysis' options are checked by the same declarations as the CLI's
and the dashboard's (one-line `VitlensError`s), and Results go through the same disk cache.
"""
from __future__ import annotations

from typing import Any

import plotly.graph_objects as go

from .declarations import get_analysis
from .engine import run as run_spec
from .errors import VitlensError
from .figures import compare as compare_figure
from .store.reference import reference as reference_result
from .request import REQUEST_FIELDS, parse_request
from .result import Result


def run(analysis: str, *, use_cache: bool = True, verbose: bool = False, **values: Any) -> Result:
    """The Result of ANALYSIS on the request VALUES: the request's fields (model, model_args,
    checkpoint, dataset, split, samples, batch_size, seed, device) and the analysis' options, by
    their declared names. VERBOSE prints a progress bar (stderr)."""
    declared = get_analysis(analysis)
    fields = {k: v for k, v in values.items() if k in REQUEST_FIELDS}
    options = {k: v for k, v in values.items() if k not in REQUEST_FIELDS}
    unknown = sorted(set(options) - {o.name for o in declared.options})
    if unknown:
        raise VitlensError(f"{analysis} has no option {', '.join(unknown)}; its options: "
                           f"{', '.join(o.name for o in declared.options) or 'none'}; the request's fields: "
                           f"{', '.join(REQUEST_FIELDS)}")
    declared.parse(options)  # bad options fail here, before any model is built
    spec = parse_request(fields, analysis, options)
    result, _ = run_spec(spec, use_cache=use_cache, verbose=verbose)
    return result


def compare(results: list[Result], view: str | None = None, labels: list[str] | None = None) -> go.Figure:
    """Several Results of one analysis (variance, fourier or noise) overlaid on one axis, as the
    dashboard's Compare page draws them."""
    return compare_figure(results, view, labels)


def reference(name: str) -> Result:
    """A reference Result of the paper's published data (`vitlens reference list` names them)."""
    return reference_result(name)
