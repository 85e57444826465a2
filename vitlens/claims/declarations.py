"""A claim of the paper, declared once: `Claim` (its id, readable name, statement, the paper's figure,
the sub-analyses it needs, the analysis whose figures are its evidence, and its rule) in the ordered
registry `CLAIMS`, filled by `register_claim` next to each rule (`vitlens.claims.rules`,
`vitlens.claims.comparisons`).

Every reader takes the claims from here: the scoreboard applies each rule (`vitlens.claims.scoreboard`),
the findings analysis requests the sub-analyses the claims need (`vitlens.analyses.findings`), the
HTML report draws each claim's evidence under its name (`vitlens.report`), the Findings page lists
the statements. Adding a claim is one `register_claim(Claim(...))` and its test.

A rule is ``rule(claim, evidence) -> [row, ...]``: pure (no torch, no I/O), from the gathered
sub-Results of the models (`Evidence`) to finding rows (`row`). Most rules are made by `per_model`
(one row per model) or `per_pair` (one row per (model with MSAs, CNN) comparison).
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any, Callable

from ..links import compare_link, link
from ..result import Result

__all__ = ["HOLDS", "FAILS", "UNSURE", "COLUMNS", "Claim", "CLAIMS", "register_claim", "Evidence", "per_model",
           "per_pair", "row", "no_pairs_row", "fmt", "ok", "failed"]

HOLDS, FAILS, UNSURE = "holds", "does not hold", "cannot tell"
COLUMNS = ["claim", "model", "value", "values", "verdict", "reason", "link", "links", "figure"]


@dataclass(frozen=True)
class Evidence:
    """What a rule reads: the gathered sub-Results and what the scoreboard derived from them."""

    base: Any  # the findings request (its data settings name the Compare views)
    results: dict  # {model: {analysis: (JobSpec, Result or the error text)}}
    groups: dict  # {model: cnn / vit / hybrid / other}
    pairs: list  # [(model with MSAs, CNN)]: the comparisons
    downsamples: dict  # {model: names of its downsampling blocks}


Rule = Callable[["Claim", Evidence], list]


@dataclass(frozen=True)
class Claim:
    """One claim of the paper: what people read (name, statement, figure), what it needs (names of
    analyses; the findings analysis requests them for every model), the analysis whose figures the
    report shows (`evidence`, default: the first need) and its rule. `order`: its place in the
    scoreboard (the paper's claims are 1-8; undeclared: after them, in the order registered)."""

    id: str
    name: str
    statement: str
    figure: str
    needs: tuple
    rule: Rule
    evidence: str = ""
    order: float = math.inf

    def __post_init__(self):
        if not self.needs:
            raise ValueError(f"claim {self.id}: it needs at least one analysis")
        object.__setattr__(self, "needs", tuple(self.needs))
        object.__setattr__(self, "evidence", self.evidence or self.needs[0])
        if self.evidence not in self.needs:
            raise ValueError(f"claim {self.id}: its evidence {self.evidence!r} is not among its needs {self.needs}")


CLAIMS: dict[str, Claim] = {}  # id -> Claim, in scoreboard order


def register_claim(claim: Claim) -> Claim:
    """Declare CLAIM (a claim of the same id is replaced); CLAIMS stays in scoreboard order."""
    CLAIMS[claim.id] = claim
    ordered = sorted(CLAIMS.values(), key=lambda c: c.order)  # stable: equal orders keep their registration
    CLAIMS.clear()
    CLAIMS.update((c.id, c) for c in ordered)
    return claim


# ----------------------------------------------------------------------------- rows

def fmt(v) -> str:
    """A number as the findings' texts print it (3 significant digits; n/a for missing)."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "n/a"
    return f"{v:.3g}" if isinstance(v, float) else str(v)


def ok(entry) -> bool:
    """Whether a gathered (spec, Result or error text) entry holds a Result."""
    return isinstance(entry[1], Result)


def failed(entry) -> str:
    return f"{entry[0].analysis} failed: {entry[1]}"


def row(claim: str, model: str, value, values: str, verdict: str, reason: str, links: list[str]) -> dict:
    """One row of the findings frame (the figure is the declared claim's)."""
    value = float(value) if value is not None and not (isinstance(value, float) and math.isnan(value)) else math.nan
    return dict(claim=claim, model=model, value=value, values=values, verdict=verdict, reason=reason,
                link=links[0] if links else "", links=json.dumps(links), figure=CLAIMS[claim].figure)


def no_pairs_row(claim: str, groups: dict[str, str]) -> dict:
    return row(claim, "all", math.nan, ", ".join(f"{m}: {g}" for m, g in groups.items()), UNSURE,
               "needs at least one model with MSAs and one CNN among the models", [])


# ----------------------------------------------------------------------------- rule makers

def per_model(measure: Callable) -> Rule:
    """A rule with one row per model: MEASURE(the Result of each need..., model, evidence) ->
    (value, values, verdict, reason). A model whose needed sub-analysis failed: cannot tell, with the
    error. Links: the views of the needed sub-Results."""
    def rule(claim: Claim, evidence: Evidence) -> list[dict]:
        rows = []
        for model, got in evidence.results.items():
            entries = [got[need] for need in claim.needs]
            links = [link(entry[0]) for entry in entries]
            broken = next((entry for entry in entries if not ok(entry)), None)
            if broken is not None:
                rows.append(row(claim.id, model, None, "", UNSURE, failed(broken), links))
                continue
            value, values, verdict, reason = measure(*(entry[1] for entry in entries), model, evidence)
            rows.append(row(claim.id, model, value, values, verdict, reason, links))
        return rows
    return rule


def per_pair(compare: Callable, compare_view: bool = False) -> Rule:
    """A rule with one row per (model with MSAs A, CNN B): COMPARE(A, B, evidence) -> (value, values,
    verdict, reason), the row named "A vs B"; without a pair, one "all" row (cannot tell). Links: each
    need's views of A and B, then (COMPARE_VIEW) the Compare page of the evidence analysis."""
    def rule(claim: Claim, evidence: Evidence) -> list[dict]:
        if not evidence.pairs:
            return [no_pairs_row(claim.id, evidence.groups)]
        rows = []
        for a, b in evidence.pairs:
            links = [link(evidence.results[m][need][0]) for need in claim.needs for m in (a, b)]
            if compare_view:
                links.append(compare_link(evidence.base, [a, b], claim.evidence))
            value, values, verdict, reason = compare(a, b, evidence)
            rows.append(row(claim.id, f"{a} vs {b}", value, values, verdict, reason, links))
        return rows
    return rule
