"""Tests for vitlens.landscape.directions: filter normalisation, exclusions, seeding, straight paths,
trajectory PCA, Hessian eigenvectors."""
import copy
import math

import pytest
import torch
import torch.nn as nn

from vitlens import VitlensError, load_model, save_checkpoint
from vitlens.landscape import (grid_axis, hessian_directions, loss_surface, path_direction, prepare_samples,
                               random_directions, trajectory_directions)


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


def test_paper_variant_matches_column_norms_and_other_normalisations(tiny_cnn):
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


def test_same_seed_same_directions(tiny_cnn):
    model = tiny_cnn()
    a = random_directions(model, 2, seed=11)
    b = random_directions(model, 2, seed=11)
    c = random_directions(model, 2, seed=12)
    for da, db in zip(a, b):
        assert all(torch.equal(da[n], db[n]) for n in da)
    assert not torch.equal(a[0]["0.weight"], c[0]["0.weight"])


def test_path_between_checkpoints(tmp_path, tiny_cnn, tiny_data, plain_eval):
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


def test_trajectory_pca(tmp_path, tiny_cnn):
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
