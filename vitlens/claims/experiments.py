"""The paper's claims about training runs, judged from an experiment's table (one row per cell x kept
epoch; `vitlens.experiments.Sweep.table`). Pure rules, one declaration each, beside their rule.

A verdict needs runs that learned: a cell whose final test accuracy is within `LEARNED_MARGIN` of
chance (1 / classes) gives no verdict ("cannot tell", with its accuracy and chance in the reason),
and a claim whose axis the experiment does not have says so ("cannot tell: the experiment has no
...") instead of failing.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Callable

import pandas as pd

from .declarations import COLUMNS, FAILS, HOLDS, UNSURE, fmt

LEARNED_MARGIN = 0.10  # final test accuracy at least chance + 10 points


@dataclass(frozen=True)
class ExperimentClaim:
    """A claim about training runs: its id, readable name, statement, the paper's figure, and its
    rule ``rule(claim, table, chance) -> [row, ...]`` (CHANCE: 1 / the data set's classes)."""

    id: str
    name: str
    statement: str
    figure: str
    rule: Callable[["ExperimentClaim", pd.DataFrame, float], list]


EXPERIMENT_CLAIMS: dict[str, ExperimentClaim] = {}


def register_experiment_claim(claim: ExperimentClaim) -> ExperimentClaim:
    EXPERIMENT_CLAIMS[claim.id] = claim
    return claim


def row(claim: ExperimentClaim, model: str, value, values: dict, verdict: str, reason: str) -> dict:
    text = ", ".join(f"{k} {fmt(v)}" for k, v in values.items())
    number = float(value) if isinstance(value, (int, float)) and math.isfinite(value) else math.nan
    return dict(zip(COLUMNS, (claim.id, model, number, text, verdict, reason, "", json.dumps([]), claim.figure)))


def finals(table: pd.DataFrame) -> pd.DataFrame:
    """Each cell's last kept epoch."""
    keys = ["model", "model_args", "fraction", "recipe", "seed"]
    done = table[table["epoch"].notna()]
    return done.sort_values("epoch").groupby(keys, sort=False).tail(1)


def not_learned(cells: pd.DataFrame, chance: float) -> str:
    """The reason no verdict can come from CELLS (final rows), or "" when every one learned."""
    low = cells[cells["test_accuracy"] < chance + LEARNED_MARGIN]
    if low.empty:
        return ""
    first = low.iloc[0]
    return (f"{len(low)} of {len(cells)} runs did not learn: e.g. {first['model']} on {first['fraction']:g} of the data "
            f"reached {100 * first['test_accuracy']:.0f}% test accuracy, chance {100 * chance:.0f}% (a verdict needs "
            f"{100 * (chance + LEARNED_MARGIN):.0f}%)")


def judge(table: pd.DataFrame, chance: float) -> pd.DataFrame:
    """Every experiment claim's rows for TABLE."""
    rows = []
    for claim in EXPERIMENT_CLAIMS.values():
        rows += claim.rule(claim, table, chance)
    return pd.DataFrame(rows, columns=COLUMNS)


# ----------------------------------------------------------------------------- the claims


def _early_nep(claim: ExperimentClaim, table: pd.DataFrame, chance: float) -> list:
    """Fig 4: per model, NEP at the first kept epoch after the initialisation, smallest vs largest data
    fraction: holds when the larger data set has fewer negative eigenvalues (lower NEP)."""
    if "nep" not in table or table["fraction"].nunique() < 2:
        return [row(claim, "all", math.nan, {}, UNSURE, "the experiment needs two data fractions and the Hessian "
                    "spectrum (analyse: hessian: {what: spectrum})")]
    out = []
    for model, cells in table.groupby("model", sort=False):
        trained = cells[cells["epoch"] > 0]
        if trained.empty:
            out.append(row(claim, model, math.nan, {}, UNSURE, "no kept epoch after the initialisation"))
            continue
        early = trained[trained["epoch"] == trained["epoch"].min()]
        small, large = early.loc[early["fraction"].idxmin()], early.loc[early["fraction"].idxmax()]
        values = {f"NEP at {small['fraction']:g}": small["nep"], f"NEP at {large['fraction']:g}": large["nep"],
                  "epoch": early["epoch"].iloc[0]}
        why = not_learned(finals(cells[cells["fraction"].isin([small["fraction"], large["fraction"]])]), chance)
        if why:
            out.append(row(claim, model, math.nan, values, UNSURE, why))
            continue
        drop = small["nep"] - large["nep"]
        verdict = HOLDS if drop > 0 else FAILS if drop < 0 else UNSURE
        out.append(row(claim, model, drop, values, verdict,
                       f"NEP {'falls' if drop > 0 else 'does not fall'} from {fmt(small['nep'])} to "
                       f"{fmt(large['nep'])} with more data at epoch {int(early['epoch'].iloc[0])}"))
    return out


def _not_overfitting(claim: ExperimentClaim, table: pd.DataFrame, chance: float) -> list:
    """Fig 3: at the end of training the small-data run also has the higher train NLL (it underfits):
    its poor test error is not overfitting. Does not hold when it fits its training data better."""
    if table["fraction"].nunique() < 2:
        return [row(claim, "all", math.nan, {}, UNSURE, "the experiment needs two data fractions")]
    out = []
    for model, cells in finals(table).groupby("model", sort=False):
        small, large = cells.loc[cells["fraction"].idxmin()], cells.loc[cells["fraction"].idxmax()]
        values = {f"train NLL at {small['fraction']:g}": small["train_nll"],
                  f"train NLL at {large['fraction']:g}": large["train_nll"],
                  f"test error at {small['fraction']:g}": small["test_error"],
                  f"test error at {large['fraction']:g}": large["test_error"]}
        why = not_learned(cells.loc[[small.name, large.name]], chance)
        if why:
            out.append(row(claim, model, math.nan, values, UNSURE, why))
            continue
        gap = small["train_nll"] - large["train_nll"]
        if gap > 0:
            verdict, why = HOLDS, "the small-data run fits its own training data worse (it underfits)"
        elif small["test_error"] > large["test_error"]:
            verdict, why = FAILS, "the small-data run fits its training data as well or better yet errs more (overfits)"
        else:
            verdict, why = UNSURE, "the small-data run fits its training data as well and errs no more: nothing to explain"
        out.append(row(claim, model, gap, values, verdict, why))
    return out


def _augmentation_calibration(claim: ExperimentClaim, table: pd.DataFrame, chance: float) -> list:
    """Strong augmentation (the `paper` recipe) gives a higher ECE than crop and flip (`noaug`)."""
    recipes = set(table["recipe"].str.split("+").str[0])
    if not {"paper", "noaug"} <= recipes:
        return [row(claim, "all", math.nan, {}, UNSURE, "the experiment needs the recipes paper and noaug")]
    out = []
    last = finals(table).assign(base=lambda f: f["recipe"].str.split("+").str[0])
    for model, cells in last.groupby("model", sort=False):
        strong, weak = cells[cells["base"] == "paper"], cells[cells["base"] == "noaug"]
        if strong.empty or weak.empty:
            continue
        values = {"ECE paper": strong["ece"].mean(), "ECE noaug": weak["ece"].mean()}
        why = not_learned(pd.concat([strong, weak]), chance)
        if why:
            out.append(row(claim, model, math.nan, values, UNSURE, why))
            continue
        gap = strong["ece"].mean() - weak["ece"].mean()
        out.append(row(claim, model, gap, values, HOLDS if gap > 0 else FAILS,
                       f"strong augmentation {'raises' if gap > 0 else 'does not raise'} the calibration error"))
    return out


def _args_value(args_json: str, key: str):
    try:
        return json.loads(args_json).get(key)
    except (ValueError, AttributeError):
        return None


def _pooling(claim: ExperimentClaim, table: pd.DataFrame, chance: float) -> list:
    """GAP / GMP / MAP pooling flatten the loss and suppress negative eigenvalues against the CLS
    token: lower NEP and a lower largest eigenvalue at the end of training."""
    last = finals(table).assign(pool=lambda f: f["model_args"].map(lambda a: _args_value(a, "global_pool") or "token"))
    if "nep" not in last or last["pool"].nunique() < 2 or "token" not in set(last["pool"]):
        return [row(claim, "all", math.nan, {}, UNSURE, "the experiment needs the CLS token and another global_pool "
                    "(model args) with the Hessian spectrum")]
    token = last[last["pool"] == "token"]
    why = not_learned(last, chance)
    out = []
    for pool, cells in last[last["pool"] != "token"].groupby("pool", sort=False):
        values = {"NEP": cells["nep"].mean(), "NEP token": token["nep"].mean(),
                  "max eigenvalue": cells["max_eigenvalue"].mean(), "max eigenvalue token": token["max_eigenvalue"].mean()}
        if why:
            out.append(row(claim, pool, math.nan, values, UNSURE, why))
            continue
        flatter = (cells["nep"].mean() < token["nep"].mean(), cells["max_eigenvalue"].mean() < token["max_eigenvalue"].mean())
        verdict = HOLDS if all(flatter) else FAILS if not any(flatter) else UNSURE
        out.append(row(claim, pool, cells["nep"].mean() - token["nep"].mean(), values, verdict,
                       f"{pool} pooling against the CLS token: NEP {fmt(values['NEP'])} vs {fmt(values['NEP token'])}, "
                       f"largest eigenvalue {fmt(values['max eigenvalue'])} vs {fmt(values['max eigenvalue token'])}"))
    return out


def _locality(claim: ExperimentClaim, table: pd.DataFrame, chance: float) -> list:
    """ConvViT: the 5x5 neighbourhood gives the lowest test error of the kernels tried (3x3, 5x5, 8x8)."""
    last = finals(table).assign(kernel=lambda f: f["model_args"].map(lambda a: _args_value(a, "kernel_size")))
    last = last[last["kernel"].notna()]
    if last["kernel"].nunique() < 2 or 5 not in set(last["kernel"]):
        return [row(claim, "all", math.nan, {}, UNSURE, "the experiment needs ConvViT with kernel_size 5 and another")]
    errors = last.groupby("kernel")["test_error"].mean()
    values = {f"test error {int(k)}x{int(k)}": v for k, v in errors.items()}
    why = not_learned(last, chance)
    if why:
        return [row(claim, "convvit", math.nan, values, UNSURE, why)]
    best = int(errors.idxmin())
    return [row(claim, "convvit", errors[5], values, HOLDS if best == 5 else FAILS,
                f"the lowest test error is at {best}x{best}")]


register_experiment_claim(ExperimentClaim(
    "data_size_early_nep", "Large data suppress negative eigenvalues early",
    "large data sets suppress negative Hessian eigenvalues in the early phase of training", "Fig 4",
    _early_nep))
register_experiment_claim(ExperimentClaim(
    "not_overfitting", "Small-data ViTs underfit",
    "a model's poor small-data performance is not overfitting: it fits its training data worse too", "Fig 3",
    _not_overfitting))
register_experiment_claim(ExperimentClaim(
    "pooling_flattens", "Pooling flattens the loss",
    "GAP / GMP / MAP pooling flatten the loss and suppress negative eigenvalues compared with the CLS token", "Sec 3",
    _pooling))
register_experiment_claim(ExperimentClaim(
    "locality_5x5", "Strong locality helps",
    "ConvViT is best with a 5x5 neighbourhood, better than 3x3 and 8x8", "Sec 3",
    _locality))
register_experiment_claim(ExperimentClaim(
    "augmentation_calibration", "Strong augmentation harms calibration",
    "strong data augmentation raises the expected calibration error", "Sec 3",
    _augmentation_calibration))
