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


def test_grid_points_equal_plain_moved_copies_and_weights_restored(tiny_cnn, tiny_data, plain_eval):
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


def test_demo_vit_grid_point_matches_copy_and_centre_matches_plain(plain_eval):
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


def test_non_finite_points_kept_and_flagged(tiny_cnn, tiny_data):
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
