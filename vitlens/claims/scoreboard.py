"""The findings frame: the claims' rules (`vitlens.claims.rules`) applied to the gathered sub-Results,
one row per (claim, model or comparison), each with the links of the views behind its numbers."""
from __future__ import annotations

import math

import pandas as pd

from ..links import compare_link, link
from ..result import Result
from .rules import (CLAIMS, COLUMNS, FAILS, HOLDS, NOISE_TIE, HIGH_FREQUENCY_PI, UNSURE, _fmt, combine, cka_rule,
                    group_of, landscape_rise, lesion_rule, low_pass_rule, no_pairs_row, noise_high_frequency_change,
                    pair_verdict, pairs_of, row, variance_peak_rule, variance_rule)


def _ok(entry) -> bool:
    return isinstance(entry[1], Result)


def _failed(entry) -> str:
    return f"{entry[0].analysis} failed: {entry[1]}"


def scoreboard(base, evidence: dict, downsamples: dict | None = None) -> pd.DataFrame:
    """The findings frame from the gathered sub-Results (pure apart from `downsamples`)."""
    rows, groups = [], {}
    for model, got in evidence.items():
        kinds = next((set(got[a][1].frame["kind"]) for a in ("variance", "fourier", "lesion") if _ok(got[a])), set())
        groups[model] = group_of(kinds)

    # per-model claims
    per_model = [("low_pass", "fourier", low_pass_rule), ("variance", "variance", variance_rule),
                 ("variance_peak", "variance", variance_peak_rule), ("cka_structure", "cka", cka_rule)]
    for claim, analysis, rule in per_model:
        for model, got in evidence.items():
            entry = got[analysis]
            links = [link(entry[0])]
            if not _ok(entry):
                rows.append(row(claim, model, None, "", UNSURE, _failed(entry), links))
                continue
            value, values, verdict, reason = rule(entry[1].frame)
            rows.append(row(claim, model, value, values, verdict, reason, links))
    for model, got in evidence.items():
        entry = got["lesion"]
        links = [link(entry[0])]
        if not _ok(entry):
            rows.append(row("lesion", model, None, "", UNSURE, _failed(entry), links))
            continue
        value, values, verdict, reason = lesion_rule(entry[1].frame, (downsamples or {}).get(model, ()))
        rows.append(row("lesion", model, value, values, verdict, reason, links))

    # comparisons: each model with MSAs vs each CNN
    pairs = pairs_of(groups)

    def spectrum(model):
        entry = evidence[model]["hessian"]
        if not _ok(entry):
            return dict(nep=math.nan, ape=math.nan, top=math.nan)
        s = entry[1].meta.get("summary", {})
        eig = entry[1].frame["eigenvalue"] if "eigenvalue" in entry[1].frame else pd.Series(dtype=float)
        return dict(nep=float(s.get("nep", math.nan)), ape=float(s.get("ape", math.nan)),
                    top=float(eig.max()) if len(eig) else math.nan)

    def rise(model):
        entry = evidence[model]["landscape"]
        return landscape_rise(entry[1].frame) if _ok(entry) else math.nan

    def noise_change(model):
        entry = evidence[model]["noise"]
        return noise_high_frequency_change(entry[1].frame) if _ok(entry) else math.nan

    for claim in ("non_convexity", "flatness", "noise_robustness"):
        if not pairs:
            rows.append(no_pairs_row(claim, groups))
    for a, b in pairs:
        name = f"{a} vs {b}"
        sa, sb = spectrum(a), spectrum(b)
        hl = [link(evidence[a]["hessian"][0]), link(evidence[b]["hessian"][0])]
        v = pair_verdict(sa["nep"], sb["nep"], msa_higher=True)
        rows.append(row("non_convexity", name, sa["nep"] - sb["nep"], f"NEP {_fmt(sa['nep'])} vs {_fmt(sb['nep'])}",
                        v, "equal NEPs (a tie)" if v == UNSURE and sa["nep"] == sb["nep"] else
                        f"{a} ({groups[a]}) {'>' if sa['nep'] > sb['nep'] else '<='} {b} (cnn) in NEP"
                        if v != UNSURE else "a spectrum is missing", hl))
        ra, rb = rise(a), rise(b)
        votes = [pair_verdict(sa["ape"], sb["ape"], False), pair_verdict(sa["top"], sb["top"], False),
                 pair_verdict(ra, rb, False)]
        ll = hl + [link(evidence[a]["landscape"][0]), link(evidence[b]["landscape"][0])]
        flat_reason = ", ".join(f"{m}: {'smaller' if x == HOLDS else 'larger' if x == FAILS else 'n/a or tie'}"
                                for m, x in zip(("APE", "top eigenvalue", "landscape rise"), votes))
        rows.append(row("flatness", name, sa["ape"] - sb["ape"],
                        f"APE {_fmt(sa['ape'])} vs {_fmt(sb['ape'])} · top eigenvalue {_fmt(sa['top'])} vs "
                        f"{_fmt(sb['top'])} · rise {_fmt(ra)} vs {_fmt(rb)}", combine(votes),
                        f"{a} vs {b}: {flat_reason}", ll))
        na, nb = noise_change(a), noise_change(b)
        v = pair_verdict(na, nb, msa_higher=True, tie=NOISE_TIE)
        nl = [link(evidence[a]["noise"][0]), link(evidence[b]["noise"][0]), compare_link(base, [a, b], "noise")]
        rows.append(row("noise_robustness", name, na - nb if not math.isnan(na - nb) else None,
                        f"accuracy change at f >= {HIGH_FREQUENCY_PI} pi: {_fmt(na)} vs {_fmt(nb)}", v,
                        f"within {NOISE_TIE:.1%} (a tie)" if v == UNSURE and not math.isnan(na - nb) else
                        f"{a} loses {'less' if v == HOLDS else 'more'} than {b}" if v != UNSURE else
                        "a noise result is missing", nl))
    order = {c: k for k, c in enumerate(CLAIMS)}
    frame = pd.DataFrame(rows, columns=COLUMNS)
    frame = frame.sort_values("claim", key=lambda s: s.map(order), kind="stable").reset_index(drop=True)
    return frame
