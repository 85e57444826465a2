"""The paper's claims about training runs, judged from hand-made experiment tables: where they hold,
where they do not, and "cannot tell" (with the reason) where the runs did not learn or the experiment
lacks the axis; the figures across runs plot the table's own values."""
import json
import math

import pandas as pd
import pytest

from vitlens.claims.declarations import FAILS, HOLDS, UNSURE
from vitlens.claims.experiments import judge
from vitlens.experiment_plots import error_vs_train_nll, figures, spectrum_over_epochs

CHANCE = 0.1


def table(cells):
    """CELLS: (model, args, fraction, recipe, [(epoch, nep, train_nll, test_accuracy, ece), ...])."""
    rows = []
    for model, args, fraction, recipe, epochs in cells:
        for epoch, nep, train_nll, accuracy, ece in epochs:
            rows.append(dict(model=model, model_args=json.dumps(args), fraction=fraction, recipe=recipe, seed=0,
                             status="done", epoch=epoch, step=10 * epoch, nep=nep, ape=1.0 + epoch,
                             max_eigenvalue=2.0 + epoch, count=20, train_nll=train_nll, test_accuracy=accuracy,
                             test_error=1 - accuracy, ece=ece))
    return pd.DataFrame(rows)


def verdict(frame, claim, model):
    found = frame[(frame["claim"] == claim) & (frame["model"] == model)]
    assert len(found) == 1, frame[["claim", "model", "verdict"]]
    return found.iloc[0]


def data_size(small_nep, large_nep, small_acc=0.8, small_nll=0.9):
    return table([("vit", {}, 0.1, "noaug", [(0, 0.5, 2.3, 0.1, 0.0), (1, small_nep, 1.5, 0.5, 0.1),
                                             (3, 0.3, small_nll, small_acc, 0.1)]),
                  ("vit", {}, 1.0, "noaug", [(0, 0.5, 2.3, 0.1, 0.0), (1, large_nep, 1.2, 0.6, 0.1),
                                             (3, 0.2, 0.4, 0.9, 0.1)])])


def test_large_data_suppress_early_negative_eigenvalues():
    assert verdict(judge(data_size(0.6, 0.2), CHANCE), "data_size_early_nep", "vit")["verdict"] == HOLDS
    row = verdict(judge(data_size(0.2, 0.6), CHANCE), "data_size_early_nep", "vit")
    assert row["verdict"] == FAILS and row["value"] == pytest.approx(-0.4)
    unlearned = verdict(judge(data_size(0.6, 0.2, small_acc=0.15), CHANCE), "data_size_early_nep", "vit")
    assert unlearned["verdict"] == UNSURE and "did not learn" in unlearned["reason"] and "15%" in unlearned["reason"]


def test_small_data_runs_underfit_rather_than_overfit():
    assert verdict(judge(data_size(0.6, 0.2), CHANCE), "not_overfitting", "vit")["verdict"] == HOLDS
    overfit = verdict(judge(data_size(0.6, 0.2, small_nll=0.1), CHANCE), "not_overfitting", "vit")
    assert overfit["verdict"] == FAILS and "overfits" in overfit["reason"]


def test_claims_without_their_axis_cannot_tell_and_say_why():
    frame = judge(data_size(0.6, 0.2), CHANCE)
    for claim, words in (("pooling_flattens", "global_pool"), ("locality_5x5", "kernel_size"),
                         ("augmentation_calibration", "paper and noaug")):
        row = verdict(frame, claim, "all")
        assert row["verdict"] == UNSURE and words in row["reason"]


def test_pooling_locality_and_augmentation():
    pools = table([("vit", {"global_pool": p}, 1.0, "noaug", [(0, 0.5, 2.3, 0.1, 0.1), (5, nep, 0.5, 0.8, 0.1)])
                   for p, nep in (("token", 0.4), ("avg", 0.2), ("max", 0.6))])
    final = pools["epoch"] == 5
    pools.loc[final & pools["model_args"].str.contains("token"), "max_eigenvalue"] = 50.0
    pools.loc[final & pools["model_args"].str.contains("max"), "max_eigenvalue"] = 100.0
    frame = judge(pools, CHANCE)
    assert verdict(frame, "pooling_flattens", "avg")["verdict"] == HOLDS
    assert verdict(frame, "pooling_flattens", "max")["verdict"] == FAILS
    kernels = table([("convvit_demo", {"kernel_size": k}, 1.0, "noaug", [(5, 0.1, 0.5, acc, 0.1)])
                     for k, acc in ((3, 0.7), (5, 0.8), (8, 0.6))])
    assert verdict(judge(kernels, CHANCE), "locality_5x5", "convvit")["verdict"] == HOLDS
    kernels.loc[kernels["model_args"].str.contains("8"), "test_error"] = 0.05
    assert verdict(judge(kernels, CHANCE), "locality_5x5", "convvit")["verdict"] == FAILS
    recipes = table([("vit", {}, 1.0, r, [(5, 0.1, 0.5, 0.8, e)]) for r, e in (("paper+lr=0.001", 0.12), ("noaug", 0.03))])
    assert verdict(judge(recipes, CHANCE), "augmentation_calibration", "vit")["verdict"] == HOLDS


def test_the_figures_plot_the_tables_values():
    frame = data_size(0.6, 0.2)
    assert [name for name, _ in figures(frame)] == ["spectrum_over_epochs", "error_vs_train_nll"]
    fig = spectrum_over_epochs(frame)
    nep = {(t.name, tuple(t.x)): list(t.y) for t in fig.data if t.yaxis == "y"}
    assert nep[("10% of the data", (0, 1, 3))] == [0.5, 0.6, 0.3]
    assert nep[("100% of the data", (0, 1, 3))] == [0.5, 0.2, 0.2]
    scatter = {t.name: (list(t.x), list(t.y)) for t in error_vs_train_nll(frame).data}
    xs, ys = scatter["vit · 10%"]
    assert xs == [2.3, 1.5, 0.9] and ys == pytest.approx([0.9, 0.5, 0.2])
    assert not math.isnan(ys[-1])
