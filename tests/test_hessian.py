"""Hessian engine against independent computations: the dense Hessian of tiny models
(torch.autograd.functional.hessian + eigvalsh), explicit matrices, and manual loss formulas.

VITLENS_TEST_DEVICE=cuda runs the engine tests (HVP engines, Lanczos, spectrum with together > 1,
timm attention) with the model and data on that device; the dense references stay on the CPU in
float64 (benchmarks/gpu_check.sh does this on a GPU machine)."""
import copy
import json
import math

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.func import functional_call

from vitlens.errors import VitlensError
from vitlens.hessian import (HessianOperator, LossConfig, block_curvature, eigenvalue_density, hessian_operator,
                             hessian_trace, hutchinson, hutchpp, krylov_deflated, lanczos, max_eigenvalue_spectrum, prepare_batches,
                             spectrum_summary, top_eigenpairs, top_eigenvalues, total_loss)

from conftest import TEST_DEVICE


# ----------------------------------------------------------------------------- helpers

DEVICE = TEST_DEVICE  # VITLENS_TEST_DEVICE, read once in conftest
if DEVICE.type == "cuda" and not torch.cuda.is_available():
    pytest.skip("VITLENS_TEST_DEVICE=cuda but no CUDA device is visible", allow_module_level=True)


def on_device(model, *batches):
    """MODEL and each (x, y) batch moved to DEVICE: (model, batch, batch, ...)."""
    return (model.to(DEVICE), *[(x.to(DEVICE), y.to(DEVICE)) for x, y in batches])


def tiny_mlp(seed=0, hidden=10, classes=4, inputs=12):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(inputs, hidden), nn.Tanh(), nn.Linear(hidden, classes)).eval()


def tiny_batch(n=32, seed=1, classes=4):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, 2, 2, generator=g), torch.randint(0, classes, (n,), generator=g)


def dense_hessian(model, batches, config=LossConfig(), params=None):
    """The full Hessian of `total_loss`, by torch.autograd.functional.hessian (float64, on the CPU)."""
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    if params is not None:
        ids = {id(p) for p in params}
        named = [(n, p) for n, p in named if id(p) in ids]
    names = [n for n, _ in named]
    if any(p.device.type != "cpu" for _, p in named):  # the reference is computed on a CPU copy
        model = copy.deepcopy(model).cpu()
        named = [(n, dict(model.named_parameters())[n]) for n in names]
    batches = prepare_batches(batches, config, num_classes=4, device="cpu")

    def loss(*weights):
        swapped = dict(zip(names, weights))
        n = sum(len(x) for x, _ in batches)
        data = 0
        for x, t in batches:
            logits = functional_call(model, swapped, (x,))
            data = data + (F.cross_entropy(logits, t) if t.dtype == torch.long
                           else torch.sum(-t * F.log_softmax(logits, 1), 1).mean()) * (len(x) / n)
        return data + 0.5 * config.weight_decay * sum((w * w).sum() for w in weights)

    blocks = torch.autograd.functional.hessian(loss, tuple(p.detach() for _, p in named))
    sizes = [p.numel() for _, p in named]
    rows = [torch.cat([blocks[i][j].reshape(sizes[i], sizes[j]) for j in range(len(sizes))], 1)
            for i in range(len(sizes))]
    return torch.cat(rows, 0).double()


def top_by_magnitude(values, k):
    return values[torch.argsort(values.abs(), descending=True)[:k]]


# ----------------------------------------------------------------------------- top-k

@pytest.mark.parametrize("engine", ["double_backward", "recompute", "forward_over_reverse"])
def test_topk_matches_dense_eigvalsh(engine):
    model, batch = on_device(tiny_mlp(), tiny_batch())
    H = dense_hessian(model, batch)
    expected = top_by_magnitude(torch.linalg.eigvalsh(H), 5)
    top = top_eigenvalues(model, batch, k=5, tol=1e-7, max_steps=200, engine=engine)
    assert torch.allclose(torch.tensor(top.eigenvalues, dtype=torch.float64), expected, rtol=1e-4, atol=1e-6)
    assert top.converged and top.hvps < H.shape[0]
    # eigenvectors: shaped like the parameters, unit norm, H v = lambda v
    params = list(model.parameters())
    for value, vector in zip(top.eigenvalues, top.eigenvectors):
        assert [t.shape for t in vector] == [p.shape for p in params]
        flat = torch.cat([t.reshape(-1) for t in vector]).double().cpu()
        assert abs(flat.norm().item() - 1) < 1e-4
        assert torch.allclose(H @ flat, value * flat, atol=1e-4)


def test_topk_keeps_sign_of_negative_eigenvalues():
    """An explicit indefinite matrix: the largest-magnitude eigenvalues, negatives included."""
    g = torch.Generator().manual_seed(0)
    Q, _ = torch.linalg.qr(torch.randn(60, 60, generator=g, dtype=torch.float64))
    values = torch.linspace(-1, 1, 60, dtype=torch.float64)
    values[0], values[1], values[-1] = -9.0, -7.0, 8.0
    A = (Q * values) @ Q.T
    pairs = top_eigenpairs(lambda v: A @ v, 60, k=3, tol=1e-10, generator=g, dtype=torch.float64)
    assert pairs.eigenvalues == pytest.approx([-9.0, 8.0, -7.0], rel=1e-8)


def test_lanczos_basis_stays_orthonormal():
    g = torch.Generator().manual_seed(3)
    B = torch.randn(200, 200, generator=g, dtype=torch.float64)
    A = B @ B.T
    tri = lanczos(lambda v: A @ v, torch.randn(200, generator=g, dtype=torch.float64), 60)
    Q = tri.basis
    assert torch.allclose(Q @ Q.T, torch.eye(len(Q), dtype=torch.float64), atol=1e-10)
    assert torch.allclose(Q @ A @ Q.T, tri.matrix(), atol=1e-8)


def test_engines_agree_and_batched_products_match():
    model, batch = on_device(tiny_mlp(), tiny_batch())
    v = torch.randn(sum(p.numel() for p in model.parameters())).to(DEVICE)
    V = torch.randn(3, len(v)).to(DEVICE)
    results = []
    for engine in ("double_backward", "recompute", "forward_over_reverse"):
        halves = [(batch[0][:16], batch[1][:16]), (batch[0][16:], batch[1][16:])]
        with hessian_operator(model, halves, engine=engine) as op:
            results.append(op.matvec(v))
            batched = op.matmat(V)
            looped = torch.stack([op.matvec(u) for u in V])
            assert torch.allclose(batched, looped, atol=1e-5)
    H = dense_hessian(model, batch)
    for hv in results:
        assert torch.allclose(hv.double().cpu(), H @ v.double().cpu(), atol=1e-5)


# ----------------------------------------------------------------------------- trace

def test_hutchinson_within_three_stderr_of_dense_trace():
    model, batch = tiny_mlp(), tiny_batch()
    exact = torch.trace(dense_hessian(model, batch)).item()
    est = hessian_trace(model, batch, "hutchinson", probes=200, seed=5)
    assert est.hvps == 200 and est.stderr > 0
    assert abs(est.estimate - exact) <= 3 * est.stderr
    pp = hessian_trace(model, batch, "hutchpp", probes=120, seed=5)
    assert abs(pp.estimate - exact) <= 3 * pp.stderr + 1e-6
    kr = hessian_trace(model, batch, "krylov", probes=60, seed=5)
    assert kr.hvps == 60 and abs(kr.estimate - exact) <= 3 * kr.stderr + 1e-6


def test_hutchpp_exact_on_low_rank_and_adaptive_stop():
    g = torch.Generator().manual_seed(0)
    U = torch.randn(300, 4, generator=g, dtype=torch.float64)
    A = U @ torch.diag(torch.tensor([50.0, -20.0, 10.0, 5.0], dtype=torch.float64)) @ U.T
    exact = torch.trace(A).item()
    pp = hutchpp(lambda v: A @ v, 300, max_probes=30, sketch=6, dtype=torch.float64, generator=g)
    assert pp.estimate == pytest.approx(exact, rel=1e-8) and pp.stderr < 1e-6 * abs(exact)
    hutch = hutchinson(lambda v: A @ v, 300, max_probes=30, dtype=torch.float64, generator=g)
    assert hutch.stderr > 1.0  # plain Hutchinson is far from exact on the same budget
    stopped = hutchinson(lambda v: A @ v, 300, max_probes=10_000, rtol=0.05, dtype=torch.float64, generator=g)
    assert stopped.hvps < 10_000 and stopped.stderr <= 0.05 * abs(stopped.estimate)


def outliers_over_bulk(n=400, seed=0):
    """A symmetric matrix like a network Hessian: a few outliers at both ends over a small bulk."""
    g = torch.Generator().manual_seed(seed)
    Q = torch.linalg.qr(torch.randn(n, n, generator=g, dtype=torch.float64)).Q
    values = torch.randn(n, generator=g, dtype=torch.float64) * 0.5
    values[:8] = torch.tensor([300.0, 150.0, 90.0, 60.0, 40.0, -80.0, -45.0, -30.0], dtype=torch.float64)
    return Q @ torch.diag(values) @ Q.T


def test_krylov_deflated_exact_part_unbiased_and_lower_variance():
    A = outliers_over_bulk()
    exact, n = torch.trace(A).item(), A.shape[0]
    kw = dict(dtype=torch.float64)
    k = krylov_deflated(lambda v: A @ v, n, max_probes=40, sketch=20, generator=torch.Generator().manual_seed(1), **kw)
    assert k.hvps == 40 and len(k.samples) == 20
    # unbiased: over many seeds the mean is within 4 standard errors of the true trace
    runs = [krylov_deflated(lambda v: A @ v, n, max_probes=30, sketch=15, generator=torch.Generator().manual_seed(s),
                            **kw).estimate for s in range(200)]
    mean = sum(runs) / len(runs)
    spread = (sum((r - mean) ** 2 for r in runs) / (len(runs) - 1)) ** 0.5
    assert abs(mean - exact) <= 4 * spread / len(runs) ** 0.5
    # variance: at the same 30 products, far below Hutchinson's (the outliers are taken out exactly)
    def spread_of(estimator, **extra):
        values = [estimator(lambda v: A @ v, n, max_probes=30, generator=torch.Generator().manual_seed(s), **kw,
                            **extra).estimate for s in range(60)]
        m = sum(values) / len(values)
        return (sum((v - m) ** 2 for v in values) / (len(values) - 1)) ** 0.5
    assert spread < spread_of(hutchinson) / 5


def test_krylov_deflated_exact_when_sketch_spans_the_range():
    g = torch.Generator().manual_seed(0)
    U = torch.randn(300, 4, generator=g, dtype=torch.float64)
    A = U @ torch.diag(torch.tensor([50.0, -20.0, 10.0, 5.0], dtype=torch.float64)) @ U.T
    k = krylov_deflated(lambda v: A @ v, 300, max_probes=12, sketch=6, dtype=torch.float64, generator=g)
    assert k.estimate == pytest.approx(torch.trace(A).item(), rel=1e-8) and k.stderr < 1e-6


def test_default_lanczos_tolerance_keeps_every_eigenvalue_within_one_percent():
    model, batch = on_device(tiny_mlp(seed=3), tiny_batch(seed=4))
    expected = top_by_magnitude(torch.linalg.eigvalsh(dense_hessian(model, batch)), 5)
    top = top_eigenvalues(model, batch, k=5)  # default tol
    assert top.converged
    for got, want in zip(top.eigenvalues, expected.tolist()):
        assert abs(got - want) <= 0.01 * abs(want)
    # the stop test: every error bound (min of residual and residual^2 / gap) within 1%
    assert all(b <= 0.01 * abs(v) for b, v in zip(top.bounds, top.eigenvalues))
    assert all(b <= r for b, r in zip(top.bounds, top.residuals))


def test_negative_trace_does_not_stop_early():
    A = -torch.diag(torch.linspace(1, 3, 50, dtype=torch.float64))
    est = hutchinson(lambda v: A @ v, 50, max_probes=40, rtol=1e-3, dtype=torch.float64)
    assert est.estimate == pytest.approx(torch.trace(A).item(), rel=1e-12)  # diagonal: every probe is exact
    assert est.hvps >= 3


# ----------------------------------------------------------------------------- density

def test_density_moments_match_dense_hessian():
    model, batch = tiny_mlp(), tiny_batch()
    H = dense_hessian(model, batch)
    n = H.shape[0]
    dens = eigenvalue_density(model, batch, runs=30, steps=25, points=2000, seed=2)
    assert torch.trapezoid(dens.density, dens.grid).item() == pytest.approx(1.0, abs=1e-3)
    for w in dens.weights:
        assert w.sum().item() == pytest.approx(1.0, abs=1e-5)
    m1, e1 = dens.moment(1)
    m2, e2 = dens.moment(2)
    assert abs(m1 - torch.trace(H).item() / n) <= 4 * e1
    assert abs(m2 - (H ** 2).sum().item() / n) <= 4 * e2
    # the nodes lie inside the true spectrum
    ev = torch.linalg.eigvalsh(H)
    assert min(t.min() for t in dens.nodes) >= ev.min() - 1e-4
    assert max(t.max() for t in dens.nodes) <= ev.max() + 1e-4


def test_slq_quadrature_is_exact_for_low_degree():
    """m Lanczos steps integrate polynomials of degree < 2m exactly: sum tau theta^j = v^T A^j v / ||v||^2."""
    from vitlens.hessian import slq
    g = torch.Generator().manual_seed(4)
    B = torch.randn(80, 80, generator=g, dtype=torch.float64)
    A = (B + B.T) / 2
    seen = []

    def matvec(v):
        if not seen:
            seen.append(v.clone())
        return A @ v
    dens = slq(matvec, 80, runs=1, steps=6, generator=torch.Generator().manual_seed(9), dtype=torch.float64)
    v = seen[0] / seen[0].norm()
    for power in (1, 2, 3, 5):
        quad = torch.sum(dens.weights[0] * dens.nodes[0] ** power).item()
        assert quad == pytest.approx((v @ torch.linalg.matrix_power(A, power) @ v).item(), rel=1e-8, abs=1e-8)


# ----------------------------------------------------------------------------- the loss

def test_weight_decay_shifts_every_eigenvalue_by_its_coefficient():
    model, batch = tiny_mlp(), tiny_batch()
    wd = 0.37
    H0, Hw = dense_hessian(model, batch), dense_hessian(model, batch, LossConfig(weight_decay=wd))
    assert torch.allclose(Hw, H0 + wd * torch.eye(len(H0), dtype=torch.float64), atol=1e-10)
    shifted = torch.linalg.eigvalsh(H0) + wd
    top = top_eigenvalues(model, batch, k=4, config=LossConfig(weight_decay=wd), tol=1e-8, max_steps=200)
    assert torch.allclose(torch.tensor(top.eigenvalues, dtype=torch.float64), top_by_magnitude(shifted, 4),
                          rtol=1e-4)
    v = torch.randn(len(H0))
    with hessian_operator(model, batch) as op0, hessian_operator(model, batch, LossConfig(weight_decay=wd)) as opw:
        assert torch.allclose(opw.matvec(v) - op0.matvec(v), wd * v, atol=1e-6)
    with hessian_operator(model, batch, LossConfig(weight_decay=wd)) as opw:
        params = list(model.parameters())
        plain = total_loss(model, prepare_batches(batch), LossConfig(), params).item()
        decayed = total_loss(model, prepare_batches(batch), LossConfig(weight_decay=wd), params).item()
        assert decayed - plain == pytest.approx(0.5 * wd * sum((p * p).sum().item() for p in params), rel=1e-6)


def test_soft_targets_change_the_loss_as_the_formula_says():
    from vitlens.data import soft_targets
    model, (x, y) = tiny_mlp(), tiny_batch()
    eps, K = 0.1, 4
    config = LossConfig(label_smoothing=eps, seed=3)
    with torch.no_grad():
        logp = F.log_softmax(model(x), 1)
        manual = -(((1 - eps) * F.one_hot(y, K) + eps / K) * logp).sum(1).mean().item()
        got = total_loss(model, prepare_batches((x, y), config, num_classes=K), config).item()
        assert got == pytest.approx(manual, rel=1e-6)
        assert got == pytest.approx(F.cross_entropy(model(x), y, label_smoothing=eps).item(), rel=1e-6)
        # mixup: the same seeded mix as vitlens.data.soft_targets, applied once
        config = LossConfig(mixup=0.4, label_smoothing=eps, seed=11)
        mx, mt = soft_targets(x, y, K, 0.4, 0.0, eps, torch.Generator().manual_seed(11))
        manual = -(mt * F.log_softmax(model(mx), 1)).sum(1).mean().item()
        got = total_loss(model, prepare_batches((x, y), config, num_classes=K), config).item()
        assert got == pytest.approx(manual, rel=1e-6)
    # and the Hessian is that of the soft-target loss
    H = dense_hessian(model, (x, y), config)
    top = top_eigenvalues(model, (x, y), k=2, config=config, tol=1e-8, max_steps=200)
    assert torch.allclose(torch.tensor(top.eigenvalues, dtype=torch.float64),
                          top_by_magnitude(torch.linalg.eigvalsh(H), 2), rtol=1e-4)


# ----------------------------------------------------------------------------- model state and ViTs

def tiny_vit():
    from timm.models.vision_transformer import VisionTransformer
    torch.manual_seed(0)
    return VisionTransformer(img_size=8, patch_size=4, embed_dim=16, depth=1, num_heads=2, mlp_ratio=2.0,
                             num_classes=4, drop_rate=0.1)


def test_model_state_restored_after_calls():
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Dropout(0.2),
                          nn.Flatten(), nn.Linear(16, 4))
    x, y = tiny_batch(8)
    model.train()
    with torch.no_grad():
        model[1].running_mean.fill_(0.3)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    for p in model.parameters():
        p.grad = torch.full_like(p, 7.0)
    rng = torch.get_rng_state()
    a = top_eigenvalues(model, (x, y), k=2, config=LossConfig(train_mode=True), tol=1e-6)
    b = top_eigenvalues(model, (x, y), k=2, config=LossConfig(train_mode=True), tol=1e-6, engine="recompute")
    assert a.eigenvalues == pytest.approx(b.eigenvalues, rel=1e-4)  # dropout masks fixed per batch
    hessian_trace(model, (x, y), probes=4)
    top_eigenvalues(model, (x, y), k=1, method="pyhessian")
    assert model.training and all(m.training for m in model.modules())
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert all(torch.equal(p.grad, torch.full_like(p, 7.0)) for p in model.parameters())
    assert torch.equal(torch.get_rng_state(), rng)
    # eval mode (the default) gives a different Hessian than train mode here (BatchNorm, dropout)
    c = top_eigenvalues(model, (x, y), k=2, tol=1e-6)
    assert c.eigenvalues != pytest.approx(a.eigenvalues, rel=1e-3)
    assert model.training


def test_vit_hvp_on_cpu_with_fused_attention_restored():
    """(On DEVICE: the name is kept for history.) timm's fused attention, as timm ships it, is
    switched off inside the engine and back on after; products agree across engines and with a
    central difference of the gradient."""
    model = tiny_vit().eval()
    fused = [m for m in model.modules() if hasattr(m, "fused_attn")]
    for m in fused:
        m.fused_attn = True
    g = torch.Generator().manual_seed(0)
    model, (x, y) = on_device(model, (torch.randn(6, 3, 8, 8, generator=g), torch.randint(0, 4, (6,), generator=g)))
    top = top_eigenvalues(model, (x, y), k=3, tol=1e-4)
    assert all(math.isfinite(v) for v in top.eigenvalues)
    assert all(m.fused_attn for m in fused) and not model.training
    v = torch.randn(sum(p.numel() for p in model.parameters()), generator=g).to(DEVICE)
    with hessian_operator(model, (x, y), engine="double_backward") as a:
        hv = a.matvec(v)
    with hessian_operator(model, (x, y), engine="forward_over_reverse") as b:
        assert torch.allclose(b.matvec(v), hv, rtol=1e-3, atol=1e-5 * hv.abs().max().item())
    # against a central difference of the gradient
    eps = 1e-3
    params = list(model.parameters())
    with hessian_operator(model, (x, y)) as op:
        w0 = [p.detach().clone() for p in params]
        grads = []
        for sign in (1, -1):
            with torch.no_grad():
                for p, w, d in zip(params, w0, op.unflatten(v)):
                    p.copy_(w + sign * eps * d)
            grads.append(op.gradient())
        with torch.no_grad():
            for p, w in zip(params, w0):
                p.copy_(w)
    fd = (grads[0] - grads[1]) / (2 * eps)
    assert (fd - hv).norm() <= 2e-2 * hv.norm()


def test_demo_vit_hvp_works_on_cpu():
    import vitlens
    g = torch.Generator().manual_seed(0)
    model, (x, y) = on_device(vitlens.load_model("demo_vit"),
                              (torch.randn(2, 3, 32, 32, generator=g), torch.randint(0, 10, (2,), generator=g)))
    with hessian_operator(model, (x, y)) as op:
        v = torch.randn(op.dim, generator=g).to(DEVICE)
        hv = op.matvec(v)
    assert torch.isfinite(hv).all() and hv.norm() > 0
    assert all(m.fused_attn == vitlens.load_model("demo_vit").blocks[0].attn.fused_attn
               for m in model.modules() if hasattr(m, "fused_attn"))


# ----------------------------------------------------------------------------- spectrum, blocks, pyhessian

def test_spectrum_per_minibatch_and_summary():
    model, *minibatches = on_device(tiny_mlp(), *[tiny_batch(8, seed=s) for s in range(3)])
    spectrum = max_eigenvalue_spectrum(model, minibatches, k=3, tol=1e-8, max_steps=200)
    assert len(spectrum.rows) == 9
    for b, batch in enumerate(minibatches):
        expected = top_by_magnitude(torch.linalg.eigvalsh(dense_hessian(model, batch)), 3)
        got = torch.tensor([r["eigenvalue"] for r in spectrum.rows if r["batch"] == b], dtype=torch.float64)
        assert torch.allclose(got, expected, rtol=1e-4, atol=1e-7)
    s = spectrum_summary([-1.0, 2.0, 4.0, -3.0])
    assert s["nep"] == 0.5 and s["ape"] == 3.0 and s["negative_mass"] == pytest.approx(0.4)


def test_block_curvature_is_the_restricted_hessian():
    model, batch = tiny_mlp(), tiny_batch()
    H = dense_hessian(model, batch)
    rows = block_curvature(model, batch, probes=50, tol=1e-8, max_steps=200)
    import vitlens
    offset, sizes = 0, {}
    for p in model.parameters():
        sizes[id(p)] = (offset, p.numel())
        offset += p.numel()
    for row, block in zip(rows, vitlens.blocks(model)):
        idx = torch.cat([torch.arange(sizes[id(p)][0], sum(sizes[id(p)])) for p in block.parameters()]) \
            if block.parameters() else None
        if idx is None:
            assert math.isnan(row["top_eigenvalue"])
            continue
        sub = H[idx][:, idx]
        assert row["top_eigenvalue"] == pytest.approx(top_by_magnitude(torch.linalg.eigvalsh(sub), 1).item(),
                                                      rel=1e-4)
        assert abs(row["trace"] - torch.trace(sub).item()) <= 4 * row["trace_stderr"] + 1e-6
    assert [r["depth"] for r in rows] == sorted(r["depth"] for r in rows) and rows[-1]["depth"] == 1.0


def test_pyhessian_engine_and_its_limits():
    model, batch = tiny_mlp(), tiny_batch()
    expected = top_by_magnitude(torch.linalg.eigvalsh(dense_hessian(model, batch)), 1)
    top = top_eigenvalues(model, batch, k=1, method="pyhessian")
    assert top.eigenvalues[0] == pytest.approx(expected.item(), rel=0.05)
    with pytest.raises(VitlensError, match="torch.eig"):
        eigenvalue_density(model, batch, method="pyhessian")
    with pytest.raises(VitlensError, match="weight decay"):
        top_eigenvalues(model, batch, k=1, config=LossConfig(weight_decay=0.1), method="pyhessian")


# ----------------------------------------------------------------------------- bad input

def test_bad_inputs_raise_one_clear_error():
    model, batch = tiny_mlp(), tiny_batch()
    n = sum(p.numel() for p in model.parameters())
    with pytest.raises(VitlensError, match="larger than the number of parameters"):
        top_eigenvalues(model, batch, k=n + 1)
    with pytest.raises(VitlensError, match="empty"):
        top_eigenvalues(model, [], k=1)
    with pytest.raises(VitlensError, match="empty"):
        top_eigenvalues(model, (batch[0][:0], batch[1][:0]), k=1)
    frozen = tiny_mlp()
    for p in frozen.parameters():
        p.requires_grad_(False)
    with pytest.raises(VitlensError, match="no trainable parameters"):
        hessian_trace(frozen, batch)
    broken = tiny_mlp()
    with torch.no_grad():
        broken[1].weight[0, 0] = float("nan")
    with pytest.raises(VitlensError, match="non-finite|nan"):
        top_eigenvalues(broken, batch, k=1)
    with pytest.raises(VitlensError, match="engine"):
        HessianOperator(model, prepare_batches(batch), engine="magic")


# ----------------------------------------------------------------------------- analysis and CLI

TINY_VIT = ["--model", "timm:vit_tiny_patch16_224", "--model-args",
            json.dumps(dict(img_size=8, patch_size=4, embed_dim=16, depth=1, num_heads=2, num_classes=10)),
            "--dataset", "synthetic", "--samples", "32", "--batch-size", "16", "--no-cache"]


def test_cli_every_what(tmp_path, capsys):
    import pandas as pd

    from vitlens.cli import main
    expected = {"spectrum": {"batch", "rank", "eigenvalue"}, "topk": {"rank", "eigenvalue", "residual"},
                "trace": {"estimator", "estimate", "stderr", "hvps"}, "density": {"grid", "density"},
                "blocks": {"block", "name", "kind", "stage", "depth", "top_eigenvalue", "trace"}}
    for what, columns in expected.items():
        out = tmp_path / f"{what}.json"
        code = main(["run", "hessian", *TINY_VIT, "--what", what, "--top-k", "2", "--minibatches", "2",
                     "--probes", "6", "--runs", "2", "--steps", "8", "--points", "50", "--out", str(out)])
        assert code == 0, capsys.readouterr().err
        payload = json.loads(out.read_text())
        assert columns <= set(pd.DataFrame(payload["rows"]).columns)
        assert payload["meta"]["summary"]
    summary = json.loads((tmp_path / "spectrum.json").read_text())["meta"]["summary"]
    assert {"nep", "ape"} <= set(summary)


def test_cli_bad_input_exits_2(capsys):
    from vitlens.cli import main
    assert main(["run", "hessian", *TINY_VIT, "--what", "topk", "--top-k", "100000000"]) == 2
    assert "--top-k must be at most" in capsys.readouterr().err  # the declared range
    assert main(["run", "hessian", *TINY_VIT, "--what", "nonsense"]) == 2
    assert main(["run", "hessian", *TINY_VIT, "--what", "density", "--method", "pyhessian"]) == 2
    assert "torch.eig" in capsys.readouterr().err
    assert main(["run", "hessian", *TINY_VIT, "--checkpoints", "/nonexistent/folder"]) == 2


def test_over_training_checkpoints(tmp_path):
    import vitlens
    from vitlens.engine import JobSpec, run
    args = json.loads(TINY_VIT[3])
    for epoch in (1, 2):
        torch.manual_seed(epoch)
        vitlens.save_checkpoint(vitlens.load_model("timm:vit_tiny_patch16_224", **args),
                                tmp_path / f"epoch_{epoch:03d}.safetensors", {"epoch": epoch})
    spec = JobSpec("hessian", model="timm:vit_tiny_patch16_224", model_args=args, dataset="synthetic", samples=16,
                   batch_size=16, params={"what": "topk", "top_k": 2, "checkpoints": str(tmp_path)})
    result, _ = run(spec, use_cache=False)
    assert sorted(result.frame["epoch"].unique()) == [1, 2]
    per_epoch = result.meta["summary"]["per_epoch"]
    assert [e["epoch"] for e in per_epoch] == [1, 2]
    assert per_epoch[0]["eigenvalues"] != per_epoch[1]["eigenvalues"]


def test_retrained_checkpoint_folder_is_not_served_from_the_cache(tmp_path):
    """The request id and cache key cover the files in a --checkpoints folder, not only its path."""
    import os

    import vitlens
    from vitlens.engine import JobSpec, run
    args = json.loads(TINY_VIT[3])

    def write(epoch, seed):
        torch.manual_seed(seed)
        path = tmp_path / f"epoch_{epoch:03d}.safetensors"
        vitlens.save_checkpoint(vitlens.load_model("timm:vit_tiny_patch16_224", **args), path, {"epoch": epoch})
        return path
    write(1, 1)
    second = write(2, 2)
    spec = JobSpec("hessian", model="timm:vit_tiny_patch16_224", model_args=args, dataset="synthetic", samples=16,
                   batch_size=16, params={"what": "topk", "top_k": 1, "checkpoints": str(tmp_path)})
    first, cached = run(spec)
    again, cached_again = run(spec)
    assert not cached and cached_again and again.frame.equals(first.frame)
    before = os.stat(second)
    write(2, 3)  # retrained: same name and size, new weights
    os.utime(second, ns=(before.st_atime_ns, before.st_mtime_ns + 1_000_000_000))
    assert os.stat(second).st_size == before.st_size
    fresh, cached_fresh = run(spec)
    assert not cached_fresh
    old_top = first.meta["summary"]["per_epoch"][1]["eigenvalues"]
    assert fresh.meta["summary"]["per_epoch"][1]["eigenvalues"] != old_top


# ----------------------------------------------------------------------------- stacked minibatches

def test_stacked_minibatches_give_the_sequential_spectrum():
    """together > 1 (one vmap'd forward-over-reverse product for several minibatches' Lanczos runs)
    against the one-at-a-time loop (double backward): same rows, same HVP counts; a smaller last
    minibatch is stacked apart; soft targets and weight decay follow each minibatch's index."""
    model, *minibatches = on_device(tiny_mlp(), *[tiny_batch(n=16, seed=s) for s in range(4)],
                                    tiny_batch(n=9, seed=9))
    for config in (LossConfig(), LossConfig(weight_decay=0.1, mixup=0.4, seed=3)):
        one = max_eigenvalue_spectrum(model, minibatches, k=3, tol=1e-7, config=config)
        stacked = max_eigenvalue_spectrum(model, minibatches, k=3, tol=1e-7, config=config, together=3)
        assert [(r["batch"], r["rank"]) for r in stacked.rows] == [(r["batch"], r["rank"]) for r in one.rows]
        got = torch.tensor([r["eigenvalue"] for r in stacked.rows], dtype=torch.float64)
        want = torch.tensor([r["eigenvalue"] for r in one.rows], dtype=torch.float64)
        assert torch.allclose(got, want, rtol=1e-5, atol=1e-7)
    # and against the dense Hessian of minibatch 1 (its targets are mixed with seed config.seed + 1)
    dense = top_by_magnitude(torch.linalg.eigvalsh(dense_hessian(
        model, minibatches[1], LossConfig(weight_decay=0.1, mixup=0.4, seed=4))), 3)
    assert torch.allclose(got[3:6], dense, rtol=1e-4)


def test_stacked_minibatches_through_a_timm_vit():
    import vitlens
    g = torch.Generator().manual_seed(0)
    model, *minibatches = on_device(vitlens.load_model("demo_vit", pretrained=True), *[
        (torch.randn(4, 3, 32, 32, generator=g), torch.randint(0, 10, (4,), generator=g)) for _ in range(2)])
    one = max_eigenvalue_spectrum(model, minibatches, k=2, tol=1e-4)
    stacked = max_eigenvalue_spectrum(model, minibatches, k=2, tol=1e-4, together=2)
    for a, b in zip(one.rows, stacked.rows):
        assert abs(a["eigenvalue"] - b["eigenvalue"]) <= 1e-3 * abs(a["eigenvalue"])
    assert not model.training and all(p.grad is None for p in model.parameters())


# ----------------------------------------------------------------------------- gap-aware stopping

def separated_spectrum(n=300, seed=0):
    """A symmetric matrix with a known spectrum like a trained network's: five well separated
    outliers (one negative) over a bulk near zero."""
    g = torch.Generator().manual_seed(seed)
    Q = torch.linalg.qr(torch.randn(n, n, generator=g, dtype=torch.float64)).Q
    values = torch.rand(n, generator=g, dtype=torch.float64) * 2 - 1
    values[:5] = torch.tensor([100.0, 60.0, -40.0, 25.0, 15.0], dtype=torch.float64)
    return (Q * values) @ Q.T, values


def test_gap_bound_bounds_the_error_and_stops_earlier():
    """Every step of several runs: once the Krylov space has found the top-k eigenvalues (before that
    no Krylov bound can see the missing ones; the gap is estimated from the Ritz values), each top-k
    Ritz value is within its gap bound of the nearest true eigenvalue, and the bound is often far
    tighter than the residual. Stopping on it takes fewer products and stays within tol."""
    from vitlens.hessian.lanczos import Tridiagonal, error_bounds
    A, values = separated_spectrum()
    n, k, tol = A.shape[0], 5, 1e-2
    expected = top_by_magnitude(values, k)
    checked = tighter = 0
    hvps = {"gap": 0, "residual": 0}
    for seed in range(5):
        start = torch.randn(n, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
        tri = lanczos(lambda v: A @ v, start, 30)
        for m in range(k, 31):
            t = Tridiagonal(tri.alpha[:m], tri.beta[:m])
            theta, S = t.ritz()
            residual = abs(t.beta[-1]) * S[-1].abs()
            gap, plain = error_bounds(theta, residual, "gap"), error_bounds(theta, residual, "residual")
            assert torch.all(gap <= plain)
            order = torch.argsort(theta.abs(), descending=True)[:k].tolist()
            nearest = [values[(values - theta[i]).abs().argmin()].item() for i in order]
            if sorted(nearest) != sorted(expected.tolist()):
                continue  # a top-k eigenvalue not found yet
            for i in order:
                error = (values - theta[i]).abs().min().item()
                assert error <= gap[i].item() * (1 + 1e-6) + 1e-12
                checked += 1
                tighter += gap[i].item() < 0.1 * plain[i].item()
        runs = {bound: top_eigenpairs(lambda v: A @ v, n, k=k, tol=tol, dtype=torch.float64, bound=bound,
                                      generator=torch.Generator().manual_seed(seed)) for bound in hvps}
        for bound, pairs in runs.items():
            hvps[bound] += pairs.hvps
            assert pairs.converged
            for got, want, b in zip(pairs.eigenvalues, expected.tolist(), pairs.bounds):
                assert abs(got - want) <= b * (1 + 1e-6) + 1e-12 and b <= tol * abs(got)
        assert runs["gap"].hvps <= runs["residual"].hvps
    assert checked > 300 and tighter > checked / 2
    assert hvps["gap"] < hvps["residual"]
    with pytest.raises(VitlensError, match="bound"):
        error_bounds(theta, residual, "nope")


def test_gap_bound_on_a_tiny_models_dense_hessian():
    model, batch = on_device(tiny_mlp(seed=3), tiny_batch(seed=4))
    values = torch.linalg.eigvalsh(dense_hessian(model, batch))
    expected = top_by_magnitude(values, 5).tolist()
    gap = top_eigenvalues(model, batch, k=5)
    plain = top_eigenvalues(model, batch, k=5, bound="residual")
    assert gap.hvps <= plain.hvps and gap.converged and plain.converged
    for got, want, b in zip(gap.eigenvalues, expected, gap.bounds):
        assert abs(got - want) <= 0.01 * abs(want) and abs(got - want) <= b + 1e-5 * abs(want)
    spectrum = max_eigenvalue_spectrum(model, [batch], k=5)
    assert [r["error_bound"] for r in spectrum.rows] == pytest.approx(gap.bounds)


def test_auto_together_is_one_on_cpu():
    """On the CPU "auto" is 1 without a probe; on DEVICE=cuda it is one of the candidates, at most
    the number of minibatches, and the spectrum runs with it."""
    from vitlens.hessian import auto_together
    model, minibatches = tiny_mlp(), [tiny_batch(8, seed=s) for s in range(3)]
    assert auto_together(model, minibatches[0]) == 1
    assert auto_together(model, minibatches[0], device="cpu", limit=3) == 1
    spectrum = max_eigenvalue_spectrum(model, minibatches, k=2, together="auto")
    assert spectrum.together == 1 and len(spectrum.rows) == 6
    assert auto_together(model, minibatches[0], config=LossConfig(train_mode=True), device=DEVICE) == 1
    # the probe itself (what runs on a GPU), forced on the CPU: one of the candidates, at most LIMIT
    assert auto_together(model, minibatches[0], probe=True, candidates=(1, 2, 4), limit=3) in (1, 2, 3)
    if DEVICE.type == "cuda":
        model, *minibatches = on_device(model, *minibatches)
        assert auto_together(model, minibatches[0], limit=3) in (1, 3)
        assert auto_together(model, minibatches[0], candidates=(1, 2, 4)) in (1, 2, 4)
        spectrum = max_eigenvalue_spectrum(model, minibatches, k=2, together="auto")
        assert spectrum.together in (1, 3) and len(spectrum.rows) == 6
    with pytest.raises(VitlensError, match="together"):
        max_eigenvalue_spectrum(model, minibatches, k=2, together="many")
