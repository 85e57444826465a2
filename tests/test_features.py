"""Feature analyses over depth (issue 7): Fourier, variance, lesion, band noise, CKA, the one-pass collector.

Every number is checked against an independent computation (numpy formulas, the naive lesion loop,
an explicit HSIC formula), on random-init demo models and small data so the file runs in about a minute.
"""
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
from torch.utils.data import TensorDataset

from vitlens import VitlensError
from vitlens.context import Context
from vitlens.request import JobSpec
from vitlens.analyses.cka import (CKAReducer, cka, cka_from_hsic, gram, hsic_matrix, linear_cka, minibatch_cka,
                                  unbiased_hsic)
from vitlens.analyses.fourier import FourierReducer, fourier, fourier_frame, half_diagonal, high_frequency
from vitlens.analyses.lesion import lesion, lesion_scores
from vitlens.analyses.noise import paper_band_noise, band_mask, band_noise, noise, noise_scores
from vitlens.analyses.variance import VarianceReducer, variance
from vitlens.data import load_data, make_loader
from vitlens.features import Reducer, block_table, collect, normalised_depth
from vitlens.models import Block, blocks, feature_map, load_model, run_blocks
from vitlens.progress import Progress

from conftest import device_under_test


# ----------------------------------------------------------------------------- helpers

def _model(spec):
    torch.manual_seed(0)
    model = load_model(spec)
    for m in model.modules():  # non-trivial BatchNorm statistics, so eval-mode BN is not the identity
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 1.5)
    return model.eval()


def _context(model, dataset, analysis, batch_size=16, seed=0):
    """The analysis' Context on the device under test (VITLENS_TEST_DEVICE, default cpu) with a copy of
    MODEL there; MODEL itself stays on the CPU for the references."""
    device = device_under_test()
    model = copy.deepcopy(model).to(device) if device.type != "cpu" else model
    spec = JobSpec(analysis=analysis, model="test", samples=len(dataset), batch_size=batch_size, seed=seed,
                   device=str(device))
    return Context(model, dataset, spec, device, lambda total, desc: Progress(total, desc))


def _all(dataset):
    x, y = zip(*(dataset[i] for i in range(len(dataset))))
    return torch.stack(x), torch.as_tensor(y)


def _identity_blocks():
    """A one-block 'model' whose only block passes its input through: the collector sees the input maps."""
    return [Block("stem", "stem", 0, [], lambda x: x), Block("head", "head", 1, [], lambda x: x.mean((1, 2, 3)),
                                                            layout="logits")]


def _numpy_fourier(maps, convention="standard"):
    """The formula of Park & Kim Fig 2a written out in numpy: mean log|fft2| over batch and channels,
    centred, half-diagonal from the centre outwards, minus DC. paper: the authors' notebook, a roll by
    (h/2, w/2) and `diag()[h//2:]`; standard: fftshift and up to the Nyquist corner (wrapping)."""
    amp = np.log(np.abs(np.fft.fft2(maps.astype(np.float64), axes=(-2, -1))) + 1e-6).mean(axis=(0, 1))
    if convention == "paper":
        h, w = amp.shape
        diag = np.diag(np.roll(amp, (int(h / 2), int(w / 2)), axis=(0, 1)))[int(h / 2):]
        return 2 * np.pi * np.arange(len(diag)) / h, diag - diag[0]
    shifted = np.fft.fftshift(amp)
    n = shifted.shape[0]
    c = n // 2
    diag = np.array([shifted[(c + k) % n, (c + k) % n] for k in range(n // 2 + 1)])
    return 2 * np.pi * np.arange(n // 2 + 1) / n, diag - diag[0]


# ----------------------------------------------------------------------------- depth and collector

def test_normalised_depth_lines_up_stem_body_head():
    block_list = blocks(load_model("demo_vit"))  # stem, 8 residual branches, head
    depth = normalised_depth(block_list)
    assert depth[0] == 0.0 and depth[-1] == 1.0
    np.testing.assert_allclose(depth[1:-1], np.arange(1, 9) / 8)
    table = block_table(blocks(load_model("demo_alternet")))
    assert [r["kind"] for r in table][:3] == ["stem", "conv", "conv"]
    assert table[-2]["depth"] == 1.0 and table[1]["depth"] == pytest.approx(1 / 7)


def test_collector_sees_every_block_output_in_order():
    model = _model("demo_alternet")
    x = torch.randn(10, 3, 32, 32)
    seen = {}

    class Keep(Reducer):
        def update(self, index, block, output, fmap):
            seen.setdefault(index, []).append(output.clone())

    collect(model, make_loader(TensorDataset(x, torch.zeros(10, dtype=torch.long)), 4), [Keep()])
    with torch.no_grad():
        _, want = run_blocks(blocks(model), x, collect=True)
    assert sorted(seen) == list(range(len(want)))
    for i, out in enumerate(want):
        torch.testing.assert_close(torch.cat(seen[i]), out)


# ----------------------------------------------------------------------------- Fourier

def test_fourier_of_known_frequency_peaks_where_it_should():
    n, k0 = 16, 3
    yy, xx = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")
    wave = np.cos(2 * np.pi * k0 * (yy + xx) / n)  # energy only at (k0, k0) and (-k0, -k0)
    rng = np.random.default_rng(0)
    maps = wave[None, None] * rng.uniform(0.5, 2.0, size=(6, 4, 1, 1)) + 0.01 * rng.standard_normal((6, 4, n, n))
    reducer = FourierReducer()
    x = torch.tensor(maps, dtype=torch.float32)
    collect(_identity_blocks(), make_loader(TensorDataset(x, torch.zeros(6, dtype=torch.long)), 4), [reducer])
    freqs, values = reducer.curve(0, "standard")
    assert np.argmax(values) == k0 and freqs[k0] == pytest.approx(2 * np.pi * k0 / n)
    assert values[k0] - np.delete(values, k0).max() > 3  # a clear peak, not a tie
    full = FourierReducer(full=True)  # the rfft2 path keeps the whole map; its diagonal is the same
    collect(_identity_blocks(), make_loader(TensorDataset(x, torch.zeros(6, dtype=torch.long)), 4), [full])
    np.testing.assert_allclose(half_diagonal(full.spectrum(0).numpy())[1], values, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(full.curve(0, "standard")[1], values, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(reducer.curve(0, "paper")[1], values[:n // 2], rtol=1e-5, atol=1e-5)
    # The full centred spectrum (rebuilt from rfft2's half plane) peaks at the off-diagonal frequency too.
    wave2 = torch.tensor(np.cos(2 * np.pi * (3 * yy + 5 * xx) / n), dtype=torch.float32)
    reducer2 = FourierReducer(full=True)
    collect(_identity_blocks(), [(wave2.expand(2, 3, n, n), torch.zeros(2))], [reducer2])
    spec = reducer2.spectrum(0).numpy()
    peak = np.unravel_index(np.argmax(spec), spec.shape)
    assert {tuple(int(v) for v in peak)} <= {(n // 2 + 3, n // 2 + 5), (n // 2 - 3, n // 2 - 5)}
    want = np.fft.fftshift(np.log(np.abs(np.fft.fft2(wave2.numpy())) + 1e-6))
    present = want > 0  # the two peaks; elsewhere float32 round-off dominates log(~0 + 1e-6)
    assert present.sum() == 2
    np.testing.assert_allclose(spec[present], want[present], rtol=1e-5)
    assert (spec[~present] < -5).all()


@pytest.mark.parametrize("convention", ["paper", "standard"])
@pytest.mark.parametrize("spec", ["demo_vit", "demo_alternet"])
def test_fourier_analysis_matches_direct_numpy(spec, convention):
    model = _model(spec)
    dataset = load_data("digits", "test", samples=40, seed=1, model=model)
    result = fourier(_context(model, dataset, "fourier", batch_size=16), {"resolution": 0, "convention": convention})
    assert result.meta["summary"]["high_frequency"]
    frame = result.frame
    x, _ = _all(dataset)
    block_list = blocks(model)
    with torch.no_grad():
        _, outputs = run_blocks(block_list, x, collect=True)
    checked = 0
    for i, (block, out) in enumerate(zip(block_list, outputs)):
        fmap = feature_map(out, block)
        if fmap is None:
            assert i not in set(frame.block)
            continue
        freqs, want = _numpy_fourier(fmap.numpy(), convention)
        got = frame[frame.block == i].sort_values("frequency")
        assert set(got[["name", "kind", "stage"]].itertuples(index=False, name=None)) == {
            (block.name, block.kind, block.stage)}
        np.testing.assert_allclose(got.frequency, freqs, atol=1e-12)
        np.testing.assert_allclose(got.relative_log_amplitude, want, rtol=1e-4, atol=1e-4)
        n = fmap.shape[-1]
        last = 1.0 if convention == "standard" else (n / 2 - 1) / (n / 2)  # the authors stop before Nyquist
        assert got.relative_log_amplitude.iloc[0] == 0.0 and got.frequency_pi.iloc[-1] == pytest.approx(last)
        assert got.paper_axis_pi.iloc[-1] == 1.0  # their axis labels call the last point 1.0 pi
        checked += 1
    assert checked == len(block_list) - 1
    high = high_frequency(frame)
    assert len(high) == checked and ((high.frequency_pi == 1.0).all() or convention == "paper")
    assert result.meta["summary"]["high_frequency"][block_list[1].name] == pytest.approx(
        float(high[high.block == 1].relative_log_amplitude.iloc[0]))


def test_fourier_resolution_resamples_and_refuses_too_small_maps():
    model = _model("demo_alternet")  # 32x32, 16x16 and 8x8 maps: 17, 9 and 5 frequencies in [0, pi]
    reducer = FourierReducer()
    dataset = load_data("digits", "test", samples=8, model=model)
    block_list = collect(model, make_loader(dataset, 8), [reducer])
    frame = fourier_frame(reducer, block_list, resolution=5, convention="standard")
    assert (frame.groupby("block").size() == 5).all()
    native = fourier_frame(reducer, block_list, convention="standard")
    last = block_list[-2]  # an 8x8 block: its native grid is exactly the 5-point grid
    np.testing.assert_allclose(frame[frame.name == last.name].relative_log_amplitude,
                               native[native.name == last.name].relative_log_amplitude)
    with pytest.raises(VitlensError, match="resolves only 5 frequencies"):
        fourier_frame(reducer, block_list, resolution=9, convention="standard")
    with pytest.raises(VitlensError, match="resolves only 4 frequencies"):  # the authors' half-diagonal: 0..n/2-1
        fourier_frame(reducer, block_list, resolution=5, convention="paper")


# ----------------------------------------------------------------------------- variance

def test_variance_matches_direct_computation_and_streaming_equals_all_at_once():
    model = _model("demo_vit")
    dataset = load_data("digits", "test", samples=37, seed=2, model=model)
    streamed = variance(_context(model, dataset, "variance", batch_size=5), {}).frame
    at_once = variance(_context(model, dataset, "variance", batch_size=37), {}).frame
    # float64 accumulators: batches of 5 and of 37 give the same variance to 1e-9 on the CPU. On a GPU the
    # float32 forward pass itself is not batch-invariant (other kernels per batch size; 1.2e-9 on an H200);
    # a float32 one-pass variance would be off by ~1e-5.
    rtol = 1e-9 if device_under_test().type == "cpu" else 1e-7
    pd.testing.assert_frame_equal(streamed, at_once, rtol=rtol, atol=0)
    x, _ = _all(dataset)
    block_list = blocks(model)
    with torch.no_grad():
        _, outputs = run_blocks(block_list, x, collect=True)
    for i, (block, out) in enumerate(zip(block_list, outputs)):
        fmap = feature_map(out, block)
        if fmap is None:
            continue
        arr = fmap.double().numpy()
        want = arr.reshape(*arr.shape[:2], -1).var(axis=2, ddof=1).mean()
        row = streamed[streamed.block == i].iloc[0]
        assert row["name"] == block.name and row["kind"] == block.kind
        assert row["variance"] == pytest.approx(want, rel=1e-5)
    assert list(streamed.depth) == sorted(streamed.depth)


def test_fourier_and_variance_share_one_pass():
    model = _model("demo_resnet")
    dataset = load_data("digits", "test", samples=12, model=model)
    calls = []
    block_list = blocks(model)
    counting = [Block(b.name, b.kind, b.stage, b.modules, (lambda s, b=b: calls.append(b.name) or b(s)),
                      layout=b.layout) for b in block_list]
    four, var = FourierReducer(), VarianceReducer()
    collect(counting, make_loader(dataset, 4), [four, var])
    assert len(calls) == 3 * len(block_list)  # 3 batches, every block once per batch
    assert four.indices() == var.indices() == list(range(len(block_list) - 1))


# ----------------------------------------------------------------------------- lesion

def _self_labelled(model, n=40, seed=0):
    """Random images labelled with the intact model's predictions: intact accuracy 1, lesions can only hurt."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 3, 32, 32, generator=g)
    with torch.no_grad():
        y = model(x).argmax(1)
    return TensorDataset(x, y)


def test_lesion_with_prefix_reuse_equals_naive_remove_and_evaluate():
    model = load_model("demo_alternet", pretrained=True).eval()  # trained: lesions change predictions
    dataset = _self_labelled(model, n=26)
    block_list = blocks(model)
    result = lesion(_context(model, dataset, "lesion", batch_size=10), {"reuse_prefix": True})
    frame = result.frame
    x, y = _all(dataset)
    skippable = [i for i, b in enumerate(block_list) if b.skippable]
    assert list(frame.block) == skippable and len(skippable) == 7
    assert result.meta["summary"]["intact_accuracy"] == 1.0
    for i in skippable:
        with torch.no_grad():  # naive: remove block i and run the whole model on the full input
            logits = run_blocks(block_list, x, skip=[i])
        row = frame[frame.block == i].iloc[0]
        assert row["name"] == block_list[i].name and row["kind"] == block_list[i].kind
        assert row["accuracy"] == pytest.approx((logits.argmax(1) == y).double().mean().item(), abs=1e-12)
        assert row["nll"] == pytest.approx(F.cross_entropy(logits, y).item(), rel=1e-5)
        assert row["accuracy_drop"] == pytest.approx(1.0 - row["accuracy"])
    assert frame.accuracy_drop.max() > 0  # the check can tell lesions apart
    naive_intact, naive = lesion_scores(block_list, make_loader(dataset, 10), reuse_prefix=False)
    assert [naive[i].accuracy for i in skippable] == list(frame.accuracy)


# ----------------------------------------------------------------------------- band noise

def _numpy_band(h, w, f, s, norm):
    wy = np.abs(2 * np.pi * np.fft.fftfreq(h))[:, None]
    wx = np.abs(2 * np.pi * np.fft.fftfreq(w))[None, :]
    r = np.hypot(wy, wx) if norm == "l2" else np.maximum(wy, wx)
    return np.abs(r - f) <= s / 2 + 1e-9


@pytest.mark.parametrize("norm", ["l2", "linf"])
@pytest.mark.parametrize("f_pi", [0.0, 0.3, 0.5, 1.0])
def test_band_noise_energy_lies_in_band(f_pi, norm):
    f, s, eps = f_pi * math.pi, 0.1 * math.pi, 0.2
    noise_ = band_noise((3, 3, 32, 32), f, s, eps, torch.Generator().manual_seed(0), norm).double().numpy()
    power = np.abs(np.fft.fft2(noise_, axes=(-2, -1))) ** 2
    band = _numpy_band(32, 32, f, s, norm)
    assert power[..., band].sum() / power.sum() >= 0.99
    np.testing.assert_allclose(np.sqrt((noise_ ** 2).mean(axis=(1, 2, 3))), eps, rtol=1e-5)  # RMS eps per image
    same = band_noise((3, 3, 32, 32), f, s, eps, torch.Generator().manual_seed(0), norm).numpy()
    np.testing.assert_array_equal(same, noise_.astype(np.float32))  # seeded


def _numpy_freq_attack(noise, f, s):
    """The authors' FreqAttack._fourier_mask (ops/adversarial.py) written out in numpy from its definition:
    roll the spectrum by (h/2, w/2), keep the amplitude inside the square annulus between the centred
    squares of sides int((f+-s) h / 2pi) * 2 (clipped to [0, h]), keep the phase, roll again, invert."""
    b, c, h, w = noise.shape
    spec = np.roll(np.fft.fft2(noise, axes=(-2, -1)), (int(h / 2), int(w / 2)), axis=(-2, -1))

    def square(side):
        side = min(max(side, 0), h)
        m = np.zeros((h, h))
        p = int((h - side) / 2)
        m[p:p + side, p:p + side] = 1
        return m
    mask = square(int((f + s) * h / (2 * np.pi)) * 2) - square(int((f - s) * h / (2 * np.pi)) * 2)
    masked = np.abs(spec) * mask * np.exp(1j * np.angle(spec))
    return np.fft.ifft2(np.roll(masked, (int(h / 2), int(w / 2)), axis=(-2, -1)), axes=(-2, -1)).real


@pytest.mark.parametrize("f_pi", [0.0, 0.25, 0.6, 1.0])
def test_paper_band_noise_is_the_authors_freq_attack(f_pi):
    f, s, eps = f_pi * math.pi, 0.2, 0.1
    got = paper_band_noise((2, 3, 32, 32), f, s, eps, torch.Generator().manual_seed(5)).double().numpy()
    raw = eps * np.sign(torch.randn((2, 3, 32, 32), generator=torch.Generator().manual_seed(5),
                                    dtype=torch.float64).numpy())  # the authors' Random(eps) noise
    np.testing.assert_allclose(got, _numpy_freq_attack(raw, f, s), atol=1e-6)
    assert np.abs(got).max() > 0 or f_pi == 0.0
    with pytest.raises(VitlensError, match="even size"):
        paper_band_noise((1, 3, 31, 31), f, s, eps)


def test_noise_analysis_default_is_the_papers_convention():
    model = _model("demo_resnet")
    dataset = _self_labelled(model, n=12)
    result = noise(_context(model, dataset, "noise", batch_size=12), {"frequencies": 3})
    assert set(result.frame.convention) == {"paper"} and set(result.frame.norm) == {"paper_square"}


def test_band_noise_rejects_bad_bands():
    with pytest.raises(VitlensError, match=r"\[0, pi\]"):
        band_mask(32, 32, 1.2 * math.pi, 0.1 * math.pi)
    with pytest.raises(VitlensError, match="holds no frequency"):
        band_mask(8, 8, 0.4 * math.pi, 0.01 * math.pi)


def test_noise_eps_zero_changes_nothing_and_high_eps_hurts():
    model = _model("demo_resnet")
    dataset = _self_labelled(model, n=24)
    frame = noise(_context(model, dataset, "noise", batch_size=12),
                  {"frequencies": [0.0, 0.5, 1.0], "width": 0.1, "eps": 0.0, "norm": "l2",
                   "convention": "standard"}).frame
    assert (frame.accuracy_change == 0).all() and (frame.nll_change == 0).all()
    assert (frame.accuracy == 1.0).all()
    clean, noisy = noise_scores(model, make_loader(dataset, 12), [0.0, math.pi], band_width=0.1 * math.pi, eps=5.0, seed=3)
    assert clean.accuracy == 1.0 and min(s.accuracy for s in noisy) < 1.0
    with pytest.raises(VitlensError, match=r"\[0, 1\]"):
        noise(_context(model, dataset, "noise"), {"frequencies": [1.5], "width": 0.1, "eps": 0.1, "norm": "l2",
                                                   "convention": "standard"})


# ----------------------------------------------------------------------------- CKA

def _numpy_hsic1(k, l):
    """Song et al. 2012, eq. for HSIC_1, written out term by term."""
    n = k.shape[0]
    kt, lt = k.copy(), l.copy()
    np.fill_diagonal(kt, 0)
    np.fill_diagonal(lt, 0)
    one = np.ones(n)
    return (np.trace(kt @ lt) + (one @ kt @ one) * (one @ lt @ one) / ((n - 1) * (n - 2))
            - 2 / (n - 2) * one @ kt @ lt @ one) / (n * (n - 3))


def _features(n=60, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 24, generator=g, dtype=torch.float64)
    y = torch.tanh(x @ torch.randn(24, 16, generator=g, dtype=torch.float64) / 3) + 0.5 * torch.randn(
        n, 16, generator=g, dtype=torch.float64)
    return x, y


def test_unbiased_hsic_matches_formula():
    x, y = _features()
    k, l = gram(x), gram(y)
    assert float(unbiased_hsic(k, l)) == pytest.approx(_numpy_hsic1(k.numpy(), l.numpy()), rel=1e-10)
    grams = torch.stack([k, l, gram(x + 1.0)])
    want = np.array([[_numpy_hsic1(a.numpy(), b.numpy()) for b in grams] for a in grams])
    np.testing.assert_allclose(hsic_matrix(grams).numpy(), want, rtol=1e-10)


def test_cka_identity_orthogonal_and_scale_invariance():
    x, y = _features()
    q, _ = torch.linalg.qr(torch.randn(24, 24, generator=torch.Generator().manual_seed(1), dtype=torch.float64))

    def unbiased(a, b):
        return float(cka_from_hsic(hsic_matrix(torch.stack([gram(a), gram(b)])))[0, 1])

    for measure in (linear_cka, unbiased):
        base = measure(x, y)
        assert measure(x, x) == pytest.approx(1.0, abs=1e-12)
        assert measure(x @ q, y) == pytest.approx(base, abs=1e-10)
        assert measure(3.7 * x, 0.2 * y) == pytest.approx(base, abs=1e-10)
        assert 0.1 < base < 0.9  # not trivially 0 or 1
        assert measure(x, torch.randn(60, 16, dtype=torch.float64)) < base
    wide = torch.randn(60, 100, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    assert linear_cka(wide, y) == pytest.approx(linear_cka(y, wide), abs=1e-12)  # Gram form (d > n)
    assert linear_cka(torch.cat([x, x], 1).repeat(1, 3), y) == pytest.approx(linear_cka(x, y), abs=1e-10)


def test_minibatch_cka_close_to_full_batch():
    x, y = _features(n=4000, seed=5)
    full = float(cka_from_hsic(hsic_matrix(torch.stack([gram(x), gram(y)])))[0, 1])
    assert abs(minibatch_cka(x, y, 200) - full) < 0.01
    assert abs(linear_cka(x, y) - full) < 0.02  # the biased full-batch CKA (Kornblith 2019) agrees too


def test_cka_analysis_heat_map_matches_minibatch_formula():
    model = _model("demo_alternet")
    dataset = load_data("digits", "test", samples=30, seed=4, model=model)
    reducer = CKAReducer()
    loader = make_loader(dataset, 10)
    block_list = collect(model, loader, [reducer])
    matrix = reducer.cka().numpy()
    n_blocks = len(block_list)
    assert matrix.shape == (n_blocks, n_blocks)
    np.testing.assert_allclose(np.diag(matrix), 1.0, atol=1e-10)
    np.testing.assert_allclose(matrix, matrix.T, atol=1e-12)
    x, _ = _all(dataset)
    with torch.no_grad():
        _, outputs = run_blocks(block_list, x, collect=True)
    reps = [(feature_map(o, b) if feature_map(o, b) is not None else o).reshape(len(x), -1).double()
            for b, o in zip(block_list, outputs)]
    for i, j in [(0, 1), (2, 5), (3, n_blocks - 1)]:
        assert matrix[i, j] == pytest.approx(minibatch_cka(reps[i], reps[j], 10), abs=1e-8)
    frame = cka(_context(model, dataset, "cka", batch_size=10), {}).frame
    assert len(frame) == n_blocks ** 2
    row = frame[(frame.i == 2) & (frame.j == 5)].iloc[0]
    assert (row.name_i, row.kind_j) == (block_list[2].name, block_list[5].kind)
    assert frame.cka.between(-1e-6, 1 + 1e-6).all()


# ----------------------------------------------------------------------------- CLI

def test_cli_runs_fourier(tmp_path):
    out = tmp_path / "f.csv"
    proc = subprocess.run([sys.executable, "-m", "vitlens", "run", "fourier", "--model", "demo_vit",
                           "--model-args", '{"pretrained": false}', "--dataset", "digits", "--samples", "16",
                           "--batch-size", "8", "--device", "cpu", "--resolution", "5", "--convention", "standard",
                           "--out", str(out)],
                          capture_output=True, text=True, timeout=300, env=dict(os.environ))
    assert proc.returncode == 0, proc.stderr
    frame = pd.read_csv(out)
    assert set(frame.kind) == {"stem", "msa", "mlp"} and (frame.groupby("block").size() == 5).all()
    assert (frame[frame.frequency == 0].relative_log_amplitude == 0).all()


def test_unfaithful_generic_split_is_refused():
    class Parallel(nn.Module):  # children used side by side: running them in order is not the model
        def __init__(self):
            super().__init__()
            self.left = nn.Conv2d(3, 3, 3, padding=1)
            self.right = nn.Conv2d(3, 3, 1)

        def forward(self, x):
            return self.left(x) + self.right(x)

    data = [(torch.randn(4, 3, 8, 8), torch.zeros(4, dtype=torch.long))]
    with pytest.raises(VitlensError, match="cannot find the blocks of Parallel"):
        collect(Parallel().eval(), data, [VarianceReducer()])
