"""Tests for vitlens.landscape.estimator: statistical mode (anchors, the regression estimator, the
stopping rule) within its tolerance, shared out over ranks, on 1D paths and resumed."""
import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn as nn

from vitlens import VitlensError
from vitlens.landscape import PointEvaluator, grid_axis, loss_surface, prepare_samples, random_directions


def teacher_task(n=1200, seed=0):
    """A linear classifier at the weights that labelled its data: low loss at the centre, steep and
    heavy-tailed per-sample losses away from it (like a trained network's landscape), and fast."""
    g = torch.Generator().manual_seed(seed)
    model = nn.Sequential(nn.Flatten(), nn.Linear(48, 10))
    with torch.no_grad():
        model[1].weight.copy_(torch.randn(10, 48, generator=g))
        model[1].bias.zero_()
    x = torch.randn(n, 3, 4, 4, generator=g)
    with torch.no_grad():
        y = (model(x) + 2.0 * torch.randn(n, 10, generator=g)).argmax(1)  # noisy labels: some errors
    return model.eval(), torch.utils.data.TensorDataset(x, y)


def test_statistical_mode_within_tolerance_and_cheaper():
    model, data = teacher_task()
    directions = random_directions(model, 2, seed=2)
    xs = grid_axis(13, -1, 1)
    full, _ = loss_surface(model, prepare_samples(data, 32, seed=0), directions, xs, xs, weight_decay=0.01)
    assert full.loss.max() > 5 * full.loss.min()  # a real landscape, not a flat one
    stat, info = loss_surface(model, prepare_samples(data, 32, seed=0), directions, xs, xs, weight_decay=0.01,
                              tolerance=0.05, rtol=0.05, z=3.0, anchors=4, min_samples=128)
    bound = np.maximum(0.05, 0.05 * full.loss.abs())
    error = (stat.loss - full.loss).abs()
    assert (error <= bound).all(), (error / bound).max()
    assert (error <= 3.0 * stat.stderr + 1e-9).mean() >= 0.95
    assert (stat.accuracy - full.accuracy).abs().max() < 0.1
    pd.testing.assert_series_equal(stat.l2, full.l2)
    # anchors: indices 0, 4, 8, 12 on each axis plus the centre 6, evaluated on every sample, exactly
    anchor = stat.i.isin([0, 4, 6, 8, 12]) & stat.j.isin([0, 4, 6, 8, 12])
    assert info["anchor_points"] == 25 and anchor.sum() == 25
    pd.testing.assert_frame_equal(stat[anchor], full[anchor])
    assert (stat[anchor].stderr == 0).all() and (stat[anchor].samples == 1200).all()
    partial = stat[stat.samples < 1200]
    assert len(partial) > 100 and (partial.stderr > 0).all() and (partial.samples >= 128).all()
    assert info["sample_fraction"] < 0.35
    # the estimate really is the regression on the anchors: without them the same samples give
    # plain means, which are further off
    with torch.no_grad():
        bare = PointEvaluator(model, prepare_samples(data, 32, seed=0), directions, weight_decay=0.01,
                              tolerance=1e9, min_samples=128)
        plain = [bare.evaluate((x, y))["loss"] for x, y in zip(partial.x, partial.y)]
        bare.restore()
    truth = full.set_index(["i", "j"]).loc[list(zip(partial.i, partial.j)), "loss"].to_numpy()
    assert np.abs(partial.loss.to_numpy() - truth).mean() < 0.5 * np.abs(np.array(plain) - truth).mean()


def test_statistical_shares_give_every_row_once_and_match_one_process():
    model, data = teacher_task(400)
    directions = random_directions(model, 2, seed=1)
    xs = grid_axis(7, -1, 1)
    kwargs = dict(tolerance=0.1, rtol=0.05, anchors=3, min_samples=64)
    whole, _ = loss_surface(model, prepare_samples(data, 32, seed=0), directions, xs, xs, **kwargs)
    parts = [loss_surface(model, prepare_samples(data, 32, seed=0), directions, xs, xs, share=(r, 3), **kwargs)
             for r in range(3)]
    assert [p[1]["anchor_points"] for p in parts] == [9, 9, 9]  # every rank needs every anchor
    gathered = pd.concat([p[0] for p in parts], ignore_index=True).sort_values(["j", "i"], ignore_index=True)
    assert len(gathered) == 49 and not gathered.duplicated(["i", "j"]).any()
    assert len(parts[0][0]) > len(parts[1][0])  # rank 0 also returns the anchor rows
    pd.testing.assert_frame_equal(gathered, whole)


def test_statistical_1d_path_and_resume():
    model, data = teacher_task(400)
    (d,) = random_directions(model, 1, seed=3)
    xs = grid_axis(11, 0, 2)
    kwargs = dict(tolerance=0.05, rtol=0.05, anchors=3, min_samples=64)
    full, _ = loss_surface(model, prepare_samples(data, 32, seed=0), [d], xs)
    stat, info = loss_surface(model, prepare_samples(data, 32, seed=0), [d], xs, **kwargs)
    assert info["anchor_points"] == 3 and list(stat.samples.iloc[[0, 5, 10]]) == [400] * 3  # x = 0, 1, 2
    assert ((stat.loss - full.loss).abs() <= np.maximum(0.05, 0.05 * full.loss.abs())).all()
    assert (stat.samples < 400).sum() == 8
    # resuming with the anchors' rows already done still evaluates them (as controls) and keeps them
    resumed, info = loss_surface(model, prepare_samples(data, 32, seed=0), [d], xs, done=stat.iloc[:6], **kwargs)
    assert info["resumed_points"] == 6 and info["points_evaluated"] == 3 + 4
    pd.testing.assert_frame_equal(resumed, stat)
    with pytest.raises(VitlensError, match="anchors"):
        loss_surface(model, prepare_samples(data, 32), [d], xs, tolerance=0.1, anchors=1)
