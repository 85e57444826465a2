"""The findings frame: every declared claim's rule (`vitlens.claims.declarations.CLAIMS`) applied to the
gathered sub-Results, one row per (claim, model or comparison), each with the links of the views
behind its numbers, in the claims' order."""
from __future__ import annotations

import pandas as pd

from .comparisons import pairs_of
from .declarations import CLAIMS, COLUMNS, Evidence, ok
from .rules import group_of

KIND_SOURCES = ("variance", "fourier", "lesion")  # sub-analyses whose frames name each block's kind


def scoreboard(base, evidence: dict, downsamples: dict | None = None) -> pd.DataFrame:
    """The findings frame from the gathered sub-Results EVIDENCE ({model: {analysis: (spec, Result or
    error text)}}); DOWNSAMPLES: {model: names of its downsampling blocks} (the lesion rule's)."""
    groups = {}
    for model, got in evidence.items():
        kinds = next((set(got[a][1].frame["kind"]) for a in KIND_SOURCES if a in got and ok(got[a])), set())
        groups[model] = group_of(kinds)
    gathered = Evidence(base, evidence, groups, pairs_of(groups), dict(downsamples or {}))
    rows = [r for claim in CLAIMS.values() for r in claim.rule(claim, gathered)]
    return pd.DataFrame(rows, columns=COLUMNS)
