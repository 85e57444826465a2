"""Tests for vitlens.landscape.surface (with samples and offsets): grid points against plain model
copies, weights restored bit for bit, interrupts and resuming, non-finite points, bad input."""
import copy
import math

import pandas as pd
import pytest
import torch

from vitlens import VitlensError, load_model
from vitlens.data import load_data
from vitlens.landscape import grid_axis, loss_surface, prepare_samples, random_directions, sharpness


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


@pytest.mark.parametrize("per_pass", [1, 3])
def test_grid_points_equal_plain_moved_copies_and_weights_restored(tiny_cnn, tiny_data, plain_eval, device, per_pass):
    """Every point against a deep copy with the moved weights, evaluated plainly; with PER_PASS 3 the
    points go through the batched (vmap) pass, 3 at a time (25 points: the last pass holds one)."""
    model, data = tiny_cnn().to(device), tiny_data(40)
    directions = random_directions(model, 2, seed=1)
    before = snapshot(model)
    samples = prepare_samples(data, batch_size=16, seed=0, device=device)
    xs = grid_axis(5, -1, 1)
    frame, info = loss_surface(model, samples, directions, xs, xs, weight_decay=0.1, points_per_pass=per_pass)
    assert_bit_equal(before, model)
    assert info["points_per_pass"] == per_pass and info["points_evaluated"] == 25
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


@pytest.mark.parametrize("per_pass", [1, 4])
def test_demo_vit_grid_point_matches_copy_and_centre_matches_plain(plain_eval, device, per_pass):
    model = load_model("demo_vit").to(device)
    data = load_data("digits", "test", samples=24, seed=0, model=model)
    directions = random_directions(model, 2, seed=0)
    before = snapshot(model)
    samples = prepare_samples(data, batch_size=12, seed=0, device=device)
    frame, info = loss_surface(model, samples, directions, [0.0, 0.7], [-0.3, 0.0], weight_decay=0.0,
                               points_per_pass=per_pass)
    assert info["points_per_pass"] == per_pass
    assert_bit_equal(before, model)
    row = frame[(frame.x == 0.7) & (frame.y == -0.3)].iloc[0]
    assert row.nll == pytest.approx(plain_eval(moved_copy(model, directions, (0.7, -0.3)), data)[0], rel=1e-5)
    centre = frame[(frame.x == 0) & (frame.y == 0)].iloc[0]
    assert centre.nll == pytest.approx(plain_eval(model, data)[0], rel=1e-5)


def test_weights_restored_after_interrupt_and_training_flag_kept(tiny_cnn, tiny_data):
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


@pytest.mark.parametrize("per_pass", [1, 6])
def test_non_finite_points_kept_and_flagged(tiny_cnn, tiny_data, per_pass):
    model, data = tiny_cnn(), tiny_data(16)
    before = snapshot(model)
    blow_up = {n: torch.zeros_like(p) for n, p in model.named_parameters()}
    blow_up["8.weight"] = torch.full_like(model[8].weight, 3e38)  # x = +-2 overflows the weights to inf
    calm = random_directions(model, 1, seed=0)[0]
    frame, info = loss_surface(model, prepare_samples(data, 8), [blow_up, calm], [-2.0, 0.0, 2.0], [0.0, 0.5],
                               points_per_pass=per_pass)
    assert_bit_equal(before, model)
    assert len(frame) == 6
    assert not frame[frame.x != 0].finite.any()
    assert frame[frame.x == 0].finite.all()
    assert info["nonfinite_points"] == 4
    summary = sharpness(frame)
    assert summary["nonfinite_points"] == 4 and math.isnan(summary["curvature_x"])


def test_points_per_pass_soft_targets_and_its_automatic_choice(tiny_cnn, tiny_data):
    """Mixup's soft targets through the batched pass equal one point at a time; 0 chooses 1 on the CPU
    (without a probe), statistical mode always takes points one by one, and a probe forced on the CPU
    returns a size it tried."""
    model, data = tiny_cnn(), tiny_data(32)
    directions = random_directions(model, 2, seed=3)
    samples = prepare_samples(data, batch_size=8, seed=0, num_classes=10, mixup=0.8, label_smoothing=0.1)
    xs = grid_axis(3, -0.5, 0.5)
    one, _ = loss_surface(model, samples, directions, xs, xs, weight_decay=0.05)
    many, info = loss_surface(model, samples, directions, xs, xs, weight_decay=0.05, points_per_pass=4)
    assert info["points_per_pass"] == 4
    pd.testing.assert_frame_equal(many, one, rtol=1e-5)
    _, auto = loss_surface(model, samples, directions, xs, xs, points_per_pass=0)
    assert auto["points_per_pass"] == 1
    _, stat = loss_surface(model, samples, directions, xs, xs, tolerance=0.5, points_per_pass=4, min_samples=8)
    assert stat["points_per_pass"] == 1
    from vitlens.landscape import PointEvaluator
    evaluator = PointEvaluator(model, samples, directions)
    before = snapshot(model)
    assert evaluator.points_per_pass(candidates=(2, 4), probe=True, reps=1) in (1, 2, 4)
    assert_bit_equal(before, model)
    with pytest.raises(VitlensError, match="points_per_pass"):
        loss_surface(model, samples, directions, xs, xs, points_per_pass=-1)


def test_a_model_vmap_cannot_batch_falls_back_to_one_point_at_a_time(tiny_data):
    """A forward pass that reads a weight as a Python number (`.item()`, which vmap refuses) cannot be
    stacked: the grid is computed point by point, equal to points_per_pass=1, and says so."""
    class ScaledByItem(torch.nn.Module):
        def __init__(self):
            super().__init__()
            torch.manual_seed(0)
            self.scale = torch.nn.Parameter(torch.tensor([0.5]))
            self.head = torch.nn.Linear(3 * 8 * 8, 10)

        def forward(self, x):
            return self.head(x.flatten(1)) * float(self.scale.item())

    model = ScaledByItem().eval()
    samples = prepare_samples(tiny_data(16), batch_size=8, seed=0)
    directions = random_directions(model, 2, seed=0, normalization="none", include_bias_norm=True)
    xs = grid_axis(3, -1, 1)
    one, _ = loss_surface(model, samples, directions, xs, xs)
    many, info = loss_surface(model, samples, directions, xs, xs, points_per_pass=4)
    assert info["points_per_pass"] == 1
    pd.testing.assert_frame_equal(many, one)


def test_bad_input_is_a_clear_error(tiny_cnn, tiny_data):
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
