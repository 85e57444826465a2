"""Evaluation: accuracy, NLL and expected calibration error with a reliability diagram's bins
(the metrics themselves: `vitlens.metrics`)."""
from __future__ import annotations

import pandas as pd
import torch.nn.functional as F

from ..context import Context
from ..metrics import calibration_bins, expected_calibration_error, predict
from ..options import Option
from ..result import Result
from . import Figure, Memory, register_analysis


@register_analysis("evaluate", "accuracy, NLL and expected calibration error (with reliability bins)",
                   [Option("bins", int, 15, "confidence bins of the reliability diagram", low=1, high=1000)],
                   lane="interactive", figures=[Figure("reliability_diagram")], memory=Memory(working=3),
                   conventions="NLL = per-sample mean cross-entropy over the data set (the authors "
                                        "average batch means: off by up to 1% with an unequal last batch)")
def evaluate(ctx: Context, params: dict) -> Result:
    loader = ctx.loader()
    progress = ctx.progress(len(loader), "evaluate")
    logits, labels = predict(ctx.model, loader, ctx.device, progress)
    nll = F.cross_entropy(logits, labels).item()
    probs = logits.softmax(dim=1)
    accuracy = (probs.argmax(dim=1) == labels).float().mean().item()
    bins = calibration_bins(probs, labels, params["bins"])
    ece = expected_calibration_error(bins)
    rows = [dict(metric=m, value=v, bin=None, lower=None, upper=None, count=None, confidence=None, accuracy=None)
            for m, v in (("accuracy", accuracy), ("error", 1 - accuracy), ("nll", nll), ("ece", ece),
                         ("samples", float(len(labels))))]
    for b in bins.to_dict("records"):
        rows.append(dict(metric="reliability", value=None, **b))
    return Result(pd.DataFrame(rows), {"analysis": "evaluate", "summary": dict(accuracy=accuracy, nll=nll, ece=ece)})
