"""The comparisons among the paper's claims (each model with MSAs against each CNN), declared beside
their rules: non-convexity, flatness and robustness to high-frequency noise. The measures and
thresholds are described in `vitlens.claims.rules` and README 'Findings'; pure (no torch, no I/O)."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd

from .declarations import FAILS, HOLDS, UNSURE, Claim, Evidence, fmt, ok, per_pair, register_claim

NOISE_TIE = 0.005
HIGH_FREQUENCY_PI = 0.5


def landscape_rise(frame: pd.DataFrame) -> float:
    """Mean loss rise over the centre at the 8 grid points around it (one grid step away): the
    landscape's rise near the minimum, whatever the grid size (inf when one is not finite)."""
    if frame.empty or "loss" not in frame:
        return math.nan
    xs, ys = np.sort(frame["x"].unique()), np.sort(frame["y"].unique())
    centre = frame[(frame["x"] == 0.0) & (frame["y"] == 0.0)]
    if len(centre) != 1 or len(xs) < 3:
        return math.nan
    step_x = float(np.min(np.diff(xs)))
    step_y = float(np.min(np.diff(ys))) if len(ys) > 1 else step_x
    near = frame[((frame["x"].abs() <= step_x * 1.0001) & (frame["y"].abs() <= step_y * 1.0001))
                 & ~((frame["x"] == 0.0) & (frame["y"] == 0.0))]
    if near.empty:
        return math.nan
    if "finite" in near and not near["finite"].astype(bool).all():
        return math.inf
    return float(near["loss"].mean() - centre["loss"].iloc[0])


def noise_high_frequency_change(noise_frame: pd.DataFrame) -> float:
    """Mean accuracy change under noise at frequencies >= HIGH_FREQUENCY_PI."""
    high = noise_frame[noise_frame["frequency_pi"] >= HIGH_FREQUENCY_PI - 1e-9]
    return float(high["accuracy_change"].mean()) if len(high) else math.nan


# ----------------------------------------------------------------------------- comparisons

def pair_verdict(msa_value: float, cnn_value: float, msa_higher: bool, tie: float = 0.0) -> str:
    if any(isinstance(v, float) and math.isnan(v) for v in (msa_value, cnn_value)):
        return UNSURE
    diff = msa_value - cnn_value
    if abs(diff) <= tie:
        return UNSURE
    return HOLDS if (diff > 0) == msa_higher else FAILS


def combine(verdicts: list[str]) -> str:
    if verdicts and all(v == HOLDS for v in verdicts):
        return HOLDS
    if verdicts and all(v == FAILS for v in verdicts):
        return FAILS
    return UNSURE


def pairs_of(groups: dict[str, str]) -> list[tuple[str, str]]:
    msa = [m for m, g in groups.items() if g in ("vit", "hybrid")]
    cnn = [m for m, g in groups.items() if g == "cnn"]
    return [(a, b) for a in msa for b in cnn]


# ----------------------------------------------------------------------------- the claims

def spectrum(entry) -> dict:
    """NEP, APE and the top eigenvalue of a gathered Hessian spectrum (n/a when it failed)."""
    if not ok(entry):
        return dict(nep=math.nan, ape=math.nan, top=math.nan)
    s = entry[1].meta.get("summary", {})
    eig = entry[1].frame["eigenvalue"] if "eigenvalue" in entry[1].frame else pd.Series(dtype=float)
    return dict(nep=float(s.get("nep", math.nan)), ape=float(s.get("ape", math.nan)),
                top=float(eig.max()) if len(eig) else math.nan)


def non_convexity_rule(a: str, b: str, evidence: Evidence):
    sa, sb = spectrum(evidence.results[a]["hessian"]), spectrum(evidence.results[b]["hessian"])
    v = pair_verdict(sa["nep"], sb["nep"], msa_higher=True)
    return (sa["nep"] - sb["nep"], f"NEP {fmt(sa['nep'])} vs {fmt(sb['nep'])}", v,
            "equal NEPs (a tie)" if v == UNSURE and sa["nep"] == sb["nep"] else
            f"{a} ({evidence.groups[a]}) {'>' if sa['nep'] > sb['nep'] else '<='} {b} (cnn) in NEP"
            if v != UNSURE else "a spectrum is missing")


register_claim(Claim(
    "non_convexity", "Non-convexity", "MSA models have more negative Hessian eigenvalues (higher NEP) than CNNs",
    "Fig 1c, Fig 4", needs=("hessian",), order=1, rule=per_pair(non_convexity_rule)))


def flatness_rule(a: str, b: str, evidence: Evidence):
    sa, sb = spectrum(evidence.results[a]["hessian"]), spectrum(evidence.results[b]["hessian"])
    ra, rb = (landscape_rise(e[1].frame) if ok(e) else math.nan
              for e in (evidence.results[a]["landscape"], evidence.results[b]["landscape"]))
    votes = [pair_verdict(sa["ape"], sb["ape"], False), pair_verdict(sa["top"], sb["top"], False),
             pair_verdict(ra, rb, False)]
    reason = ", ".join(f"{m}: {'smaller' if x == HOLDS else 'larger' if x == FAILS else 'n/a or tie'}"
                       for m, x in zip(("APE", "top eigenvalue", "landscape rise"), votes))
    return (sa["ape"] - sb["ape"], f"APE {fmt(sa['ape'])} vs {fmt(sb['ape'])} · top eigenvalue {fmt(sa['top'])} "
            f"vs {fmt(sb['top'])} · rise {fmt(ra)} vs {fmt(rb)}", combine(votes), f"{a} vs {b}: {reason}")


register_claim(Claim(
    "flatness", "Flatness", "MSA models are flatter than CNNs: smaller APE, top eigenvalue and landscape rise",
    "Fig 1b, Fig 4", needs=("hessian", "landscape"), evidence="landscape", order=2, rule=per_pair(flatness_rule)))


def noise_robustness_rule(a: str, b: str, evidence: Evidence):
    na, nb = (noise_high_frequency_change(e[1].frame) if ok(e) else math.nan
              for e in (evidence.results[a]["noise"], evidence.results[b]["noise"]))
    v = pair_verdict(na, nb, msa_higher=True, tie=NOISE_TIE)
    return (na - nb if not math.isnan(na - nb) else None,
            f"accuracy change at f >= {HIGH_FREQUENCY_PI} pi: {fmt(na)} vs {fmt(nb)}", v,
            f"within {NOISE_TIE:.1%} (a tie)" if v == UNSURE and not math.isnan(na - nb) else
            f"{a} loses {'less' if v == HOLDS else 'more'} than {b}" if v != UNSURE else "a noise result is missing")


register_claim(Claim(
    "noise_robustness", "Robustness to high-frequency noise",
    "MSA models are more robust to high-frequency noise than CNNs", "Fig 2b", needs=("noise",), order=8,
    rule=per_pair(noise_robustness_rule, compare_view=True)))
