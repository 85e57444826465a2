"""The paper's claims as pure rules over Results (no torch, no I/O), each declared once beside its rule
(`register_claim`, `vitlens.claims.declarations`): the per-model claims here, the comparisons in
`vitlens.claims.comparisons`. `vitlens.analyses.findings` gathers the sub-Results the claims need,
`vitlens.claims.scoreboard` applies every declared rule to make the findings frame.

The findings frame has one row per (claim, model or comparison): claim, model, value (the headline
number), values (all numbers, as text), verdict (holds / does not hold / cannot tell), reason, link
(a relative dashboard URL of the page and parameters behind the numbers), links (all of them, JSON)
and figure (the paper's figure).

Model groups (from the block kinds of `vitlens.models.blocks`): `cnn` = conv blocks and no MSA;
`vit` = MSA blocks and no conv; `hybrid` = both (AlterNet). "With MSAs" = vit or hybrid.

Shares: a per-block rule "holds" when at least 2/3 of the counted blocks agree, "does not hold" when
at most 1/3 do, and "cannot tell" in between (mixed) or when no block counts. A comparison "holds"
when every (with-MSA, CNN) pair agrees, "does not hold" when every pair disagrees, else "cannot tell".

The claims and their rules:

* non_convexity (Fig 1c, Fig 4): NEP, the share of negative eigenvalues in the max-eigenvalue
  spectrum (`hessian --what spectrum`, `minibatches` x `minibatch`, top `top_k`). Each pair (model
  with MSAs, CNN): holds if NEP(MSA model) > NEP(CNN); equal NEPs are a tie (cannot tell).
* flatness (Fig 1b, Fig 4): three measures, each "MSA model < CNN": APE (mean positive eigenvalue of
  the spectrum), the top eigenvalue of the spectrum, and the landscape's rise near the minimum: the
  mean loss over the 8 grid points around the centre minus the centre's loss (`landscape`, grid
  `grid`, range `range`: one step is 2 range / (grid - 1)). Holds if all three
  agree, does not hold if none does, else cannot tell.
* low_pass (Fig 2a, Fig 8): per block, the change of the high-frequency relative log amplitude
  (`fourier` summary, the value at the highest frequency) from the block before it. Counted: MSA
  blocks (agree when it goes down) and conv/MLP blocks (agree when it goes up), only where the block
  keeps the feature-map size (a downsampling block changes the frequency grid). Reported: the share
  of MSAs that lower it and of conv/MLP blocks that raise it; the verdict is on the MSAs (models
  without MSAs: on conv/MLP blocks).
* variance (Fig 9): the same counting for the feature-map variance (`variance`): MSAs lower it,
  conv/MLP blocks raise it (size-keeping blocks only).
* variance_peak (Fig 9): multi-stage models only: in each stage the variance peaks at the stage's
  last block, or, when a stage ends with MSA blocks, at the last block before them (the MSAs at its
  end lower it). Single-stage models: cannot tell (no stages).
* lesion (Sec 4, Fig 10 area): per stage with two lesionable blocks of the same kind, the accuracy
  drop of removing the first vs the last of them (`lesion`); agrees when the first hurts more
  (ties count as not agreeing). Like with like: a pair whose first block downsamples (its lesion
  keeps the projection shortcut) is reported but counted only when no other pair exists. A block
  whose drop is at most `LESION_HARMLESS` (0.5 percentage points) is "harmless".
* cka_structure (Sec 4): block structure = distance-matched CKA contrast: for each block distance d,
  mean CKA of same-group pairs minus cross-group pairs at that distance, averaged over d (body blocks
  only). Multi-stage: groups = stages; holds if the contrast >= `CKA_STRUCTURE` (0.05). Single stage
  (a plain ViT): the largest contrast over all splits into two contiguous groups; the claim (no
  block structure) holds if it is < 0.05.
* noise_robustness (Fig 2b): the mean accuracy change under noise at frequencies >= 0.5 pi
  (`noise`, `noise_frequencies` points, `noise_eps`); each pair holds if the MSA model loses less
  (by more than `NOISE_TIE`, 0.5 points) than the CNN; within 0.5 points is a tie.

On the embedded digits set (8x8 digits upscaled to 32x32) and tiny models, these are checks of the
rules, not of the paper's CIFAR-100 numbers, which need CIFAR and the authors' checkpoints.
"""
from __future__ import annotations

import math
from typing import Iterable

import numpy as np
import pandas as pd

from ..frames import high_frequency
from .declarations import FAILS, HOLDS, UNSURE, Claim, per_model, register_claim

AGREE_SHARE = 2 / 3
LESION_HARMLESS = 0.005
CKA_STRUCTURE = 0.05
DEFAULT_MODELS = "demo_resnet_deep,demo_vit_deep,demo_alternet"
BODY_KINDS = ("conv", "msa", "mlp")

# ----------------------------------------------------------------------------- helpers

def share_verdict(agree: int, total: int) -> str:
    if total == 0:
        return UNSURE
    share = agree / total
    return HOLDS if share >= AGREE_SHARE - 1e-12 else FAILS if share <= 1 - AGREE_SHARE + 1e-12 else UNSURE


def group_of(kinds: Iterable[str]) -> str:
    """cnn / vit / hybrid / other, from a model's block kinds."""
    kinds = set(kinds)
    msa, conv = "msa" in kinds, "conv" in kinds
    return "hybrid" if msa and conv else "vit" if msa else "cnn" if conv else "other"


# ----------------------------------------------------------------------------- per-block rules

def block_changes(frame: pd.DataFrame, value: str, size: str | list[str]) -> pd.DataFrame:
    """One row per block (block order): kind, stage, VALUE, its change from the previous block with a
    row, and `comparable` (the block keeps the previous block's map size SIZE)."""
    size = [size] if isinstance(size, str) else size
    f = frame.sort_values("block").reset_index(drop=True).copy()
    prev_size = f[size].shift(1)
    f["change"] = f[value] - f[value].shift(1)
    f["comparable"] = (f[size] == prev_size).all(axis=1) & f["change"].notna()
    return f


def high_frequency_table(fourier_frame: pd.DataFrame) -> pd.DataFrame:
    """Per block: the relative log amplitude at its highest frequency (`high_frequency`) and the map size."""
    return high_frequency(fourier_frame).rename(columns={"relative_log_amplitude": "high_frequency"})


def direction_counts(changes: pd.DataFrame) -> dict:
    """Counted blocks (body kinds, comparable): MSAs that lower the value, conv/MLPs that raise it."""
    c = changes[changes["comparable"] & changes["kind"].isin(BODY_KINDS)]
    msa, other = c[c["kind"] == "msa"], c[c["kind"] != "msa"]
    return dict(msa_down=int((msa["change"] < 0).sum()), msa=len(msa),
                other_up=int((other["change"] > 0).sum()), other=len(other),
                skipped=int((~changes["comparable"] & changes["kind"].isin(BODY_KINDS)).sum()))


def direction_rule(changes: pd.DataFrame, what: str) -> tuple[float, str, str, str]:
    """(headline share, values, verdict, reason) for "MSAs lower WHAT, conv/MLPs raise it"."""
    n = direction_counts(changes)
    msa_share = n["msa_down"] / n["msa"] if n["msa"] else math.nan
    other_share = n["other_up"] / n["other"] if n["other"] else math.nan
    values = (f"MSA lower {n['msa_down']}/{n['msa']} · conv/MLP raise {n['other_up']}/{n['other']}"
              + (f" · {n['skipped']} resizing blocks not counted" if n["skipped"] else ""))
    if n["msa"]:
        verdict = share_verdict(n["msa_down"], n["msa"])
        reason = f"{n['msa_down']} of {n['msa']} MSA blocks lower the {what}"
        if n["other"]:
            reason += f"; {n['other_up']} of {n['other']} conv/MLP blocks raise it"
        return msa_share, values, verdict, reason
    if n["other"]:
        verdict = share_verdict(n["other_up"], n["other"])
        return other_share, values, verdict, (f"no MSA blocks; {n['other_up']} of {n['other']} conv/MLP blocks "
                                              f"raise the {what}")
    return math.nan, values, UNSURE, "no size-keeping conv/MSA/MLP block to count"


def low_pass_rule(fourier_frame: pd.DataFrame):
    changes = block_changes(high_frequency_table(fourier_frame), "high_frequency", "size")
    return direction_rule(changes, "high-frequency log amplitude")


register_claim(Claim(
    "low_pass", "Low-pass MSAs", "MSAs lower high-frequency amplitude; convs/MLPs raise it", "Fig 2a, Fig 8",
    needs=("fourier",), order=3, rule=per_model(lambda fourier, model, evidence: low_pass_rule(fourier.frame))))


def variance_rule(variance_frame: pd.DataFrame):
    changes = block_changes(variance_frame, "variance", ["height", "width"])
    return direction_rule(changes, "feature-map variance")


register_claim(Claim(
    "variance", "Variance reduction", "MSAs reduce feature-map variance; convs/MLPs raise it", "Fig 9",
    needs=("variance",), order=4, rule=per_model(lambda variance, model, evidence: variance_rule(variance.frame))))


def variance_peak_rule(variance_frame: pd.DataFrame) -> tuple[float, str, str, str]:
    """Multi-stage: the variance of each stage peaks at its last block (before any trailing MSAs)."""
    body = variance_frame[variance_frame["kind"].isin(BODY_KINDS)].sort_values("block")
    stages = sorted(body["stage"].unique())
    if len(stages) < 2:
        return math.nan, f"{len(stages)} stage", UNSURE, "single-stage model: no stage ends to compare"
    agree, notes = 0, []
    for s in stages:
        blocks = body[body["stage"] == s]
        kinds = list(blocks["kind"])
        end = len(kinds) - 1
        while end > 0 and kinds[end] == "msa":
            end -= 1  # trailing MSAs lower the variance: the peak is expected just before them
        expected = blocks.iloc[end]["name"]
        peak = blocks.loc[blocks["variance"].idxmax(), "name"]
        agree += peak == expected
        notes.append(f"stage {s}: peak {peak}" + ("" if peak == expected else f" (expected {expected})"))
    return agree / len(stages), f"{agree}/{len(stages)} stages", share_verdict(agree, len(stages)), "; ".join(notes)


register_claim(Claim(
    "variance_peak", "Variance peaks at stage ends", "in multi-stage nets the variance peaks at the end of each stage",
    "Fig 9", needs=("variance",), order=5,
    rule=per_model(lambda variance, model, evidence: variance_peak_rule(variance.frame))))


def lesion_pairs(lesion_frame: pd.DataFrame, downsamples: Iterable[str] = ()) -> list[dict]:
    """Per stage: the first lesionable block and the last one of the same kind after it."""
    downsamples = set(downsamples)
    pairs = []
    for s, blocks in lesion_frame.sort_values("block").groupby("stage", sort=True):
        blocks = blocks[blocks["kind"].isin(BODY_KINDS)]
        if len(blocks) < 2:
            continue
        first = blocks.iloc[0]
        same = blocks[(blocks["kind"] == first["kind"]) & (blocks["block"] > first["block"])]
        if same.empty:
            continue
        last = same.iloc[-1]
        pairs.append(dict(stage=int(s), first=first["name"], last=last["name"], kind=first["kind"],
                          first_drop=float(first["accuracy_drop"]), last_drop=float(last["accuracy_drop"]),
                          downsampling=first["name"] in downsamples,
                          agree=float(first["accuracy_drop"]) > float(last["accuracy_drop"])))
    return pairs


def harmless(lesion_frame: pd.DataFrame, tolerance: float = LESION_HARMLESS) -> list[str]:
    """Blocks whose removal costs at most TOLERANCE accuracy."""
    return list(lesion_frame.loc[lesion_frame["accuracy_drop"] <= tolerance, "name"])


def lesion_rule(lesion_frame: pd.DataFrame, downsamples: Iterable[str] = ()) -> tuple[float, str, str, str]:
    pairs = lesion_pairs(lesion_frame, downsamples)
    if not pairs:
        return math.nan, "no pairs", UNSURE, "no stage has two lesionable blocks of the same kind"
    like = [p for p in pairs if not p["downsampling"]]
    counted = like or pairs
    agree = sum(p["agree"] for p in counted)
    values = "; ".join(f"stage {p['stage']} {p['kind']}: {p['first']} {p['first_drop']:+.1%} vs {p['last']} "
                       f"{p['last_drop']:+.1%}" + (" (first downsamples)" if p["downsampling"] else "")
                       for p in pairs)
    reason = f"first hurts more in {agree} of {len(counted)} stage(s)"
    skipped = [p["stage"] for p in pairs if p["downsampling"]]
    if skipped and like:
        reason += f"; stage(s) {skipped} not counted: their first block downsamples (not like with like)"
    elif skipped:
        reason += "; every compared first block downsamples (not like with like)"
    safe = harmless(lesion_frame)
    if safe:
        reason += f"; harmless (drop <= {LESION_HARMLESS:.1%}): {len(safe)} block(s)"
    return agree / len(counted), values, share_verdict(agree, len(counted)), reason


register_claim(Claim(
    "lesion", "Early blocks matter more", "removing a block early in a stage hurts more than removing one late",
    "Sec 4, Fig 10", needs=("lesion",), order=6,
    rule=per_model(lambda lesion, model, evidence: lesion_rule(lesion.frame, evidence.downsamples.get(model, ())))))


def cka_contrast(cka_frame: pd.DataFrame, group: dict[int, int]) -> float:
    """Distance-matched contrast: mean over block distances d of (same-group CKA - cross-group CKA)."""
    f = cka_frame[cka_frame["i"].isin(group) & cka_frame["j"].isin(group) & (cka_frame["i"] < cka_frame["j"])]
    order = {b: k for k, b in enumerate(sorted(group))}
    d = f["j"].map(order) - f["i"].map(order)
    same = f["i"].map(group) == f["j"].map(group)
    gaps = []
    for dist in sorted(d.unique()):
        at = d == dist
        if (at & same).any() and (at & ~same).any():
            gaps.append(f.loc[at & same, "cka"].mean() - f.loc[at & ~same, "cka"].mean())
    return float(np.mean(gaps)) if gaps else math.nan


def cka_rule(cka_frame: pd.DataFrame) -> tuple[float, str, str, str]:
    body = cka_frame[(cka_frame["i"] == cka_frame["j"]) & cka_frame["kind_i"].isin(BODY_KINDS)]
    stages = dict(zip(body["i"], body["stage_i"]))
    if len(stages) < 3:
        return math.nan, f"{len(stages)} body blocks", UNSURE, "fewer than 3 body blocks"
    if len(set(stages.values())) > 1:
        c = cka_contrast(cka_frame, stages)
        if math.isnan(c):
            return c, "contrast n/a", UNSURE, "no block distance has both same-stage and cross-stage pairs"
        verdict = HOLDS if c >= CKA_STRUCTURE else FAILS
        return c, f"stage contrast {c:.3f}", verdict, (f"multi-stage: same-stage minus cross-stage CKA at equal "
                                                       f"distance is {c:.3f} ({'>=' if c >= CKA_STRUCTURE else '<'} "
                                                       f"{CKA_STRUCTURE})")
    blocks = sorted(stages)
    best, where = -math.inf, None
    for k in range(1, len(blocks)):
        c = cka_contrast(cka_frame, {b: int(n >= k) for n, b in enumerate(blocks)})
        if not math.isnan(c) and c > best:
            best, where = c, k
    if where is None:
        return math.nan, "contrast n/a", UNSURE, "no split gives comparable pairs"
    verdict = HOLDS if best < CKA_STRUCTURE else FAILS
    return best, f"best split contrast {best:.3f}", verdict, (
        f"single stage: the strongest two-group split (after block {where} of {len(blocks)}) has contrast "
        f"{best:.3f} ({'<' if best < CKA_STRUCTURE else '>='} {CKA_STRUCTURE}: "
        f"{'no' if best < CKA_STRUCTURE else 'a'} block structure)")


register_claim(Claim(
    "cka_structure", "CKA block structure", "multi-stage nets show a block structure in CKA; a plain ViT does not",
    "Sec 4", needs=("cka",), order=7, rule=per_model(lambda cka, model, evidence: cka_rule(cka.frame))))


def tally(frame: pd.DataFrame) -> dict:
    return {v: int((frame["verdict"] == v).sum()) for v in (HOLDS, FAILS, UNSURE)}
