"""Loss landscapes: directions, in-place grid evaluation against plain model copies, statistical mode,
resuming, sharpness, bad input and the CLI."""
import copy
import math
import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from vitlens import VitlensError, load_model
from vitlens.landscape import (grid_axis, loss_surface, path_direction, prepare_samples, random_directions,
                               sharpness, trajectory_directions)


def tiny_cnn(seed=0):
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                          nn.Conv2d(8, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU(),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 10))
    with torch.no_grad():  # non-trivial BatchNorm statistics, so eval mode matters
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 1.5)
    return model.eval()


def tiny_data(n=40, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 3, 8, 8, generator=g)
    y = torch.randint(0, 10, (n,), generator=g)
    return torch.utils.data.TensorDataset(x, y)


def plain_eval(model, dataset):
    """Loss the obvious way: one batch of everything, F.cross_entropy."""
    x = torch.stack([dataset[i][0] for i in range(len(dataset))])
    y = torch.stack([torch.as_tensor(dataset[i][1]) for i in range(len(dataset))])
    with torch.no_grad():
        logits = model(x)
    return F.cross_entropy(logits, y).item(), (logits.argmax(1) == y).float().mean().item()


def moved_copy(model, directions, coords):
    """A deep copy of MODEL loaded with w + sum c_k d_k (the reference the fast path must equal)."""
    state = copy.deepcopy(model.state_dict())
    for name in dict(model.named_parameters()):
        state[name] = state[name] + sum(c * d[name] for c, d in zip(coords, directions))
    other = copy.deepcopy(model)
    other.load_state_dict(state)
    return other.eval()


def snapshot(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def assert_bit_equal(before, model):
    after = model.state_dict()
    assert before.keys() == after.keys()
    for k in before:
        assert torch.equal(before[k], after[k]), k


# ----------------------------------------------------------------------------- directions


def test_filter_normalised_direction_has_the_weights_filter_norms():
    model = load_model("demo_resnet")
    d1, d2 = random_directions(model, 2, seed=3)
    for name, w in model.named_parameters():
        for d in (d1, d2):
            if w.dim() <= 1:
                assert not torch.count_nonzero(d[name]), f"{name} (bias/norm) must be zeroed"
                continue
            w_norms = w.detach().flatten(1).norm(dim=1)
            d_norms = d[name].flatten(1).norm(dim=1)
            torch.testing.assert_close(d_norms, w_norms, rtol=1e-5, atol=1e-7)
    assert not torch.equal(d1["stem.weight"], d2["stem.weight"])


def test_paper_variant_matches_column_norms_and_other_normalisations():
    model = tiny_cnn()
    weights = dict(model.named_parameters())
    (paper,) = random_directions(model, 1, seed=0, normalization="filter_paper")
    w, d = weights["0.weight"].detach(), paper["0.weight"]
    torch.testing.assert_close(d.norm(dim=0), w.norm(dim=0), rtol=1e-5, atol=1e-6)  # norms across filters
    assert not torch.allclose(d.flatten(1).norm(dim=1), w.flatten(1).norm(dim=1), rtol=1e-3)
    (layer,) = random_directions(model, 1, seed=0, normalization="layer")
    for name in ("0.weight", "3.weight", "8.weight"):
        assert layer[name].norm().item() == pytest.approx(weights[name].norm().item(), rel=1e-5)
    (whole,) = random_directions(model, 1, seed=0, normalization="model")
    active = [n for n in weights if weights[n].dim() > 1]
    norm = lambda t: math.sqrt(sum(float((t[n].detach().double() ** 2).sum()) for n in active))  # noqa: E731
    assert norm(whole) == pytest.approx(norm(weights), rel=1e-5)
    (with_bias,) = random_directions(model, 1, seed=0, include_bias_norm=True)
    assert with_bias["1.weight"].norm().item() == pytest.approx(weights["1.weight"].norm().item(), rel=1e-5)
    (default,) = random_directions(model, 1, seed=0)
    assert torch.equal(with_bias["0.weight"], default["0.weight"])  # exclusions never shift the draws


def test_position_embeddings_and_relative_tables_excluded_by_default():
    vit = load_model("demo_vit")
    d = random_directions(vit, 1, seed=0)[0]
    assert not torch.count_nonzero(d["pos_embed"])
    assert torch.count_nonzero(d["cls_token"])
    kept = random_directions(vit, 1, seed=0, include_pos_embed=True)[0]
    assert torch.count_nonzero(kept["pos_embed"])
    alter = load_model("demo_alternet")
    d = random_directions(alter, 1, seed=0)[0]
    tables = [n for n in d if "relative_position" in n]
    assert tables and all(not torch.count_nonzero(d[n]) for n in tables)


def test_same_seed_same_directions():
    model = tiny_cnn()
    a = random_directions(model, 2, seed=11)
    b = random_directions(model, 2, seed=11)
    c = random_directions(model, 2, seed=12)
    for da, db in zip(a, b):
        assert all(torch.equal(da[n], db[n]) for n in da)
    assert not torch.equal(a[0]["0.weight"], c[0]["0.weight"])


# ----------------------------------------------------------------------------- grid values


def test_grid_points_equal_plain_moved_copies_and_weights_restored():
    model, data = tiny_cnn(), tiny_data(40)
    directions = random_directions(model, 2, seed=1)
    before = snapshot(model)
    samples = prepare_samples(data, batch_size=16, seed=0)
    xs = grid_axis(5, -1, 1)
    frame, info = loss_surface(model, samples, directions, xs, xs, weight_decay=0.1)
    assert_bit_equal(before, model)
    assert len(frame) == 25 and frame["finite"].all() and (frame["samples"] == 40).all()
    for x, y in [(0.0, 0.0), (-1.0, 0.5), (0.5, -0.5), (1.0, 1.0)]:
        row = frame[(frame.x == x) & (frame.y == y)].iloc[0]
        other = moved_copy(model, directions, (x, y))
        nll, acc = plain_eval(other, data)
        assert row.nll == pytest.approx(nll, rel=1e-5, abs=1e-6)
        assert row.accuracy == pytest.approx(acc)
        l2 = sum(p.detach().double().norm().item() for p in other.parameters())
        assert row.l2 == pytest.approx(l2, rel=1e-6)
        assert row.loss == pytest.approx(nll + 0.1 * l2, rel=1e-5)
    centre = frame[(frame.x == 0) & (frame.y == 0)].iloc[0]
    assert centre.nll == pytest.approx(plain_eval(model, data)[0], rel=1e-6)


def test_demo_vit_grid_point_matches_copy_and_centre_matches_plain():
    from vitlens.data import load_data
    model = load_model("demo_vit")
    data = load_data("digits", "test", samples=24, seed=0, model=model)
    directions = random_directions(model, 2, seed=0)
    before = snapshot(model)
    samples = prepare_samples(data, batch_size=12, seed=0)
    frame, _ = loss_surface(model, samples, directions, [0.0, 0.7], [-0.3, 0.0], weight_decay=0.0)
    assert_bit_equal(before, model)
    row = frame[(frame.x == 0.7) & (frame.y == -0.3)].iloc[0]
    assert row.nll == pytest.approx(plain_eval(moved_copy(model, directions, (0.7, -0.3)), data)[0], rel=1e-5)
    centre = frame[(frame.x == 0) & (frame.y == 0)].iloc[0]
    assert centre.nll == pytest.approx(plain_eval(model, data)[0], rel=1e-5)


def test_weights_restored_after_interrupt_and_training_flag_kept():
    model, data = tiny_cnn(), tiny_data(16)
    model.train()
    before = snapshot(model)

    class Stop:
        calls = 0

        def update(self, n=1, message=""):
            Stop.calls += 1
            if Stop.calls == 3:
                raise KeyboardInterrupt

    saved = []
    with pytest.raises(KeyboardInterrupt):
        loss_surface(model, prepare_samples(data, 8), random_directions(model, 2), grid_axis(3, -1, 1),
                     grid_axis(3, -1, 1), progress=Stop(), on_checkpoint=saved.append)
    assert_bit_equal(before, model)
    assert model.training and all(m.training for m in model.modules())
    assert len(saved[-1]) == 3  # the rows done so far were handed over for resuming
    # resuming from them gives the same grid as a run that was never interrupted
    full, _ = loss_surface(model, prepare_samples(data, 8), random_directions(model, 2), grid_axis(3, -1, 1),
                           grid_axis(3, -1, 1))
    resumed, info = loss_surface(model, prepare_samples(data, 8), random_directions(model, 2),
                                 grid_axis(3, -1, 1), grid_axis(3, -1, 1), done=saved[-1])
    assert info["resumed_points"] == 3 and info["points_evaluated"] == 6
    pd.testing.assert_frame_equal(resumed, full)


def test_non_finite_points_kept_and_flagged():
    model, data = tiny_cnn(), tiny_data(16)
    before = snapshot(model)
    blow_up = {n: torch.zeros_like(p) for n, p in model.named_parameters()}
    blow_up["8.weight"] = torch.full_like(model[8].weight, 3e38)  # x = +-2 overflows the weights to inf
    calm = random_directions(model, 1, seed=0)[0]
    frame, info = loss_surface(model, prepare_samples(data, 8), [blow_up, calm], [-2.0, 0.0, 2.0], [0.0, 0.5])
    assert_bit_equal(before, model)
    assert len(frame) == 6
    assert not frame[frame.x != 0].finite.any()
    assert frame[frame.x == 0].finite.all()
    assert info["nonfinite_points"] == 4
    summary = sharpness(frame)
    assert summary["nonfinite_points"] == 4 and math.isnan(summary["curvature_x"])


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
    from vitlens.landscape import PointEvaluator
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


# ----------------------------------------------------------------------------- 1D paths, trajectories


def test_path_between_checkpoints(tmp_path):
    from vitlens import save_checkpoint
    start, end, data = tiny_cnn(0), tiny_cnn(1), tiny_data(16)
    end.load_state_dict({**end.state_dict(), **{k: v for k, v in start.state_dict().items() if "running" in k}})
    path = save_checkpoint(end, tmp_path / "end.safetensors")
    d = path_direction(start, path)
    frame, _ = loss_surface(start, prepare_samples(data, 16), [d], grid_axis(3, 0, 1))
    assert list(frame.x) == [0.0, 0.5, 1.0] and (frame.y == 0).all()
    assert frame.nll.iloc[0] == pytest.approx(plain_eval(start, data)[0], rel=1e-5)
    assert frame.nll.iloc[-1] == pytest.approx(plain_eval(end, data)[0], rel=1e-5)
    with pytest.raises(VitlensError, match="zero"):
        path_direction(start, start)


def test_trajectory_pca(tmp_path):
    from vitlens import save_checkpoint
    model = tiny_cnn()
    g = torch.Generator().manual_seed(0)
    for epoch in range(4):
        other = copy.deepcopy(model)
        with torch.no_grad():
            for p in other.parameters():
                p.add_(torch.randn(p.shape, generator=g) * 0.1 * (3 - epoch))
        save_checkpoint(other, tmp_path / f"epoch_{epoch:03d}.safetensors")
    (d1, d2), info = trajectory_directions(model, tmp_path)
    flat = [torch.cat([d[n].flatten() for n in d]) for d in (d1, d2)]
    assert flat[0].norm().item() == pytest.approx(1.0, rel=1e-5)
    assert abs(torch.dot(flat[0], flat[1]).item()) < 1e-5
    assert len(info["coordinates"]) == 4 and 0 < sum(info["explained_variance_ratio"]) <= 1 + 1e-9


def test_hessian_directions():
    from vitlens.landscape import hessian_directions
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(12, 6), nn.Tanh(), nn.Linear(6, 3)).eval()
    x, y = torch.randn(20, 3, 2, 2), torch.randint(0, 3, (20,))
    (d1, d2), values = hessian_directions(model, [(x, y)], 2)
    assert abs(values[0]) >= abs(values[1])
    flat = torch.cat([d1[n].flatten() for n in d1])
    assert flat.norm().item() == pytest.approx(1.0, rel=1e-4)
    # against the dense Hessian of the same loss: the top eigenpair by magnitude
    params = dict(model.named_parameters())
    names = list(params)
    w0 = torch.cat([params[n].detach().flatten() for n in names])

    def loss_of(w):
        parts, offset = {}, 0
        for n in names:
            k = params[n].numel()
            parts[n] = w[offset:offset + k].view_as(params[n])
            offset += k
        return nn.functional.cross_entropy(torch.func.functional_call(model, parts, (x,)), y)
    dense = torch.autograd.functional.hessian(loss_of, w0)
    eigenvalues = torch.linalg.eigvalsh(dense)
    top = eigenvalues[eigenvalues.abs().argmax()].item()
    assert values[0] == pytest.approx(top, rel=1e-3)
    v = torch.cat([d1[n].flatten() for n in names])
    assert (dense @ v - top * v).norm().item() < 1e-2 * abs(top)


# ----------------------------------------------------------------------------- sharpness, bad input


def test_sharpness_of_a_known_quadratic():
    xs = grid_axis(9, -1, 1)
    rows = [dict(x=x, y=y, loss=1.0 + 2.0 * x * x + 0.5 * y * y, finite=True) for y in xs for x in xs]
    s = sharpness(pd.DataFrame(rows), radius=0.5)
    assert s["curvature_x"] == pytest.approx(4.0) and s["curvature_y"] == pytest.approx(1.0)
    assert s["centre_loss"] == 1.0 and s["rise_max"] == pytest.approx(2.0 * 0.25)


def test_bad_input_is_a_clear_error():
    model, data = tiny_cnn(), tiny_data(8)
    with pytest.raises(VitlensError, match="between 2 and"):
        grid_axis(1, -1, 1)
    with pytest.raises(VitlensError, match="between 2 and"):
        grid_axis(10**6, -1, 1)
    with pytest.raises(VitlensError, match="range"):
        grid_axis(5, 0.0, 0.0)
    with pytest.raises(VitlensError, match="zero"):
        random_directions(model, 1, exclude=[".*"])
    broken = tiny_cnn()
    with torch.no_grad():
        broken[0].weight[0, 0, 0, 0] = float("nan")
    with pytest.raises(VitlensError, match="not finite"):
        loss_surface(broken, prepare_samples(data, 8), random_directions(model, 2), [0.0, 1.0], [0.0, 1.0])


# ----------------------------------------------------------------------------- analysis and CLI


def test_analysis_resumes_from_the_cache():
    from vitlens.engine import JobSpec, run
    spec = JobSpec(analysis="landscape", model="demo_resnet", samples=16, batch_size=16,
                   params={"grid": 3, "range": 0.5})
    calls = []

    def interrupt(done, total, message):
        calls.append(done)
        if len(calls) == 4:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run(spec, progress=interrupt)
    resumed, cached = run(spec)
    assert not cached and resumed.meta["evaluation"]["resumed_points"] == 4
    fresh, _ = run(JobSpec(**{**spec.to_dict(), "params": {**spec.params, "resume": False}}), use_cache=False)
    pd.testing.assert_frame_equal(resumed.frame, fresh.frame)
    assert set(resumed.frame.columns) >= {"x", "y", "loss", "nll", "l2", "accuracy", "samples", "stderr", "finite"}
    assert math.isfinite(resumed.meta["summary"]["curvature_x"])


def test_cli_run_landscape(tmp_path):
    out = tmp_path / "s.csv"
    env = dict(os.environ, VITLENS_CACHE_DIR=str(tmp_path / "cache"))
    proc = subprocess.run([sys.executable, "-m", "vitlens", "run", "landscape", "--model", "demo_resnet",
                           "--samples", "16", "--batch-size", "16", "--grid", "3", "--range", "0.5",
                           "--out", str(out)], capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr
    frame = pd.read_csv(out)
    assert len(frame) == 9 and frame.finite.all()
    proc = subprocess.run([sys.executable, "-m", "vitlens", "run", "landscape", "--model", "demo_resnet",
                           "--samples", "16", "--range", "0"], capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 2 and "range" in proc.stderr and "Traceback" not in proc.stderr
