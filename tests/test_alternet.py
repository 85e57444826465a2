"""AlterNet as the authors built it (Park & Kim 2022; github.com/xxxnell/how-do-vits-work models/alternet.py):
parameter counts, the authors' state_dict names and shapes (tests/fixtures/authors_alternet_keys.json,
recorded from their code), the Conv/MSA layout, the MSA block, the block split and lesions."""
import json
import pathlib

import pytest
import torch
import torch.nn as nn

from vitlens import VitlensError
from vitlens.models import blocks, load_model, run_blocks
from vitlens.models.alternet import (AlterNet, AttentionBlock, PreActBasicBlock, PreActBottleneck, WindowAttention,
                                     convert_authors_state_dict, is_authors_state_dict, stage_layout)

FIXTURE = json.loads((pathlib.Path(__file__).parent / "fixtures" / "authors_alternet_keys.json").read_text())

# The authors' models, instantiated (ImageNet: 1000 classes; CIFAR: 3x3 stem, no pool, window 4).
AUTHORS_PARAMS = {"alternet50": 35_915_038, "alternet18": 9_968_803,
                  "alternet18_cifar": 9_452_893, "alternet50_cifar": 34_062_538}


def _count(model):
    return sum(p.numel() for p in model.parameters())


def _layout(model):
    return ["".join("M" if isinstance(b, AttentionBlock) else "C" for b in stage) for stage in model.stages]


@pytest.mark.parametrize("name", list(AUTHORS_PARAMS))
def test_parameter_counts_equal_the_authors(name):
    model = load_model(name)
    assert _count(model) == AUTHORS_PARAMS[name]
    assert model.num_classes == {"alternet18_cifar": 10, "alternet50_cifar": 100}.get(name, 1000)


@pytest.mark.parametrize("entry", FIXTURE["models"], ids=[f"{m['vitlens_model']}-{m['params']}" for m in FIXTURE["models"]])
def test_authors_state_dict_converts_onto_ours(entry):
    """Every key of the authors' state_dict maps to one of ours with the same shape, and back."""
    model = load_model(entry["vitlens_model"], **entry["vitlens_args"])
    assert _count(model) == entry["params"]
    authors = {k: torch.empty(shape, device="meta") for k, shape in entry["state_dict"]}
    assert is_authors_state_dict(authors) and not is_authors_state_dict(model.state_dict())
    converted = convert_authors_state_dict(authors)
    assert len(converted) == len(authors)
    ours = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert {k: tuple(v.shape) for k, v in converted.items()} == ours


def test_converted_authors_weights_load_strictly():
    entry = next(m for m in FIXTURE["models"] if m["vitlens_model"] == "alternet18_cifar")
    gen = torch.Generator().manual_seed(0)
    authors = {k: (torch.tensor(3) if k.endswith("num_batches_tracked") else torch.randn(shape, generator=gen))
               for k, shape in entry["state_dict"]}
    model = load_model("alternet18_cifar")
    model.load_state_dict(convert_authors_state_dict(authors), strict=True)
    blk = model.stages[3][1]
    torch.testing.assert_close(blk.attn.relative_position_bias, authors["layer4.1.attn.pos_embedding"])
    torch.testing.assert_close(blk.attn.proj.bias, authors["layer4.1.attn.attn.to_out.0.bias"])
    torch.testing.assert_close(model.stages[1][0].bn2.weight, authors["layer2.0.conv2.0.weight"])
    torch.testing.assert_close(model.fc.weight, authors["classifier.0.dense.weight"])
    with pytest.raises(VitlensError, match="unknown key 'layer1.0.mlp.weight'"):
        convert_authors_state_dict({**authors, "layer1.0.mlp.weight": torch.zeros(1)})


def test_authors_checkpoint_file_loads(tmp_path):
    """load_checkpoint recognises the authors' layout (vitlens.models.checkpoints uses our converter)."""
    from vitlens.models import load_checkpoint
    entry = next(m for m in FIXTURE["models"] if m["vitlens_model"] == "alternet" and m["vitlens_args"])
    gen = torch.Generator().manual_seed(1)
    authors = {k: (torch.tensor(5) if k.endswith("num_batches_tracked") else torch.randn(shape, generator=gen))
               for k, shape in entry["state_dict"]}
    torch.save({"state_dict": {f"module.{k}": v for k, v in authors.items()}}, tmp_path / "authors.pth.tar")
    model = load_model("alternet", **entry["vitlens_args"])
    load_checkpoint(model, tmp_path / "authors.pth.tar")
    torch.testing.assert_close(model.stem[0].weight, authors["layer0.layer0.0.weight"])
    torch.testing.assert_close(model.stages[2][3].attn.kv.weight, authors["layer3.3.attn.attn.to_kv.weight"])


def test_stages_alternate_from_the_end():
    assert stage_layout(6, 3) == list("CMCMCM") and stage_layout(4, 1) == list("CCCM")
    assert stage_layout(3, 0) == list("CCC") and stage_layout(4, 2) == list("CMCM")
    assert _layout(load_model("alternet50")) == ["CCC", "CCCM", "CMCMCM", "CMCM"]
    assert _layout(load_model("alternet18_cifar")) == ["CC", "CM", "CM", "CM"]
    assert _layout(load_model("demo_alternet")) == ["C", "CMCM", "CM"]
    assert _layout(load_model("demo_resnet")) == ["C", "C", "C"]
    with pytest.raises(VitlensError, match="stage 1 of 3 blocks holds 0 to 1 MSA blocks, got 2"):
        load_model("alternet", depths=[1, 3], msa=[0, 2], heads=[1, 1], widths=[8, 8])
    with pytest.raises(VitlensError, match="at least one conv block"):
        load_model("alternet", depths=[1, 1], msa=[0, 1], heads=[1, 1], widths=[8, 8])


def test_first_block_of_a_stage_is_the_downsampling_conv():
    model = load_model("alternet50_cifar")
    for s, stage in enumerate(model.stages):
        assert isinstance(stage[0], PreActBottleneck) and stage[0].shortcut is not None
        assert stage[0].conv2.stride == ((2, 2) if s else (1, 1))  # stride on the 3x3 conv
        assert stage[0].shortcut.stride == ((2, 2) if s else (1, 1))
        assert all(b.shortcut is None for b in stage[1:])
    x = torch.randn(1, 3, 32, 32)
    shapes = []
    with torch.no_grad():
        x = model.stem(x)
        for stage in model.stages:
            x = stage(x)
            shapes.append(tuple(x.shape[1:]))
    assert shapes == [(256, 32, 32), (512, 16, 16), (1024, 8, 8), (2048, 4, 4)]


def test_msa_block_is_a_preactivation_bottleneck_without_mlp():
    model = load_model("alternet50")
    blk = model.stages[2][1]  # stage 3, 1024 channels, 12 heads
    assert isinstance(blk, AttentionBlock) and blk.shortcut is None
    names = [n for n, _ in blk.named_children()]
    assert names == ["bn1", "conv1", "bn2", "attn"]
    assert not any(isinstance(m, (nn.Linear, nn.LayerNorm)) for m in blk.modules())
    assert blk.bn1.num_features == 1024 and blk.conv1.weight.shape == (256, 1024, 1, 1) and blk.conv1.bias is None
    assert blk.bn2.num_features == 256
    attn = blk.attn
    assert attn.heads == 12 and attn.head_dim == 64 and attn.window == 7
    assert attn.q.weight.shape == (768, 256, 1, 1) and attn.q.bias is None
    assert attn.kv.weight.shape == (1536, 256, 1, 1) and attn.kv.bias is None
    assert attn.proj.weight.shape == (1024, 768, 1, 1) and attn.proj.bias is not None
    assert attn.relative_position_bias.shape == (13, 13)
    heads = [[b.attn.heads for b in stage if isinstance(b, AttentionBlock)] for stage in model.stages]
    assert heads == [[], [6], [12, 12, 12], [24, 24]]
    cifar = load_model("alternet18_cifar")
    assert {m.attn.window for m in cifar.modules() if isinstance(m, AttentionBlock)} == {4}
    assert cifar.stages[1][1].attn.relative_position_bias.shape == (7, 7)
    # pre-activation: GELU(BN(x)) feeds the branch
    x = torch.randn(2, 1024, 14, 14)
    with torch.no_grad():
        want = x + attn(blk.bn2(blk.conv1(nn.functional.gelu(blk.bn1(x)))))
        torch.testing.assert_close(blk(x), want)


def test_stems_and_classifier():
    imagenet = load_model("alternet18")
    assert imagenet.pretrained_cfg["input_size"] == (3, 224, 224)
    conv, pool = imagenet.stem
    assert conv.kernel_size == (7, 7) and conv.stride == (2, 2) and conv.bias is None
    assert isinstance(pool, nn.MaxPool2d) and pool.kernel_size == 3 and pool.stride == 2
    assert not any(isinstance(m, (nn.BatchNorm2d, nn.ReLU)) for m in imagenet.stem.modules())
    cifar = load_model("alternet18_cifar")
    assert isinstance(cifar.stem, nn.Conv2d) and cifar.stem.kernel_size == (3, 3) and cifar.stem.stride == (1, 1)
    assert isinstance(cifar.norm, nn.BatchNorm2d) and cifar.fc.in_features == 512
    x = torch.randn(2, 512, 4, 4)
    with torch.no_grad():
        torch.testing.assert_close(cifar.forward_head(x), cifar.fc(torch.relu(cifar.norm(x)).mean((2, 3))))


def _reference_window_attention(attn: WindowAttention, x: torch.Tensor) -> torch.Tensor:
    """Naive, window by window and head by head, from the authors' formulas: q, k, v by 1x1 convs,
    channels head-major, logits q.k * d^-1/2 + table[key - query offset + w - 1]."""
    b, _, h, w = x.shape
    win, heads, d = attn.window, attn.heads, attn.head_dim
    q = attn.q(x)
    k, v = attn.kv(x).chunk(2, dim=1)
    table = attn.relative_position_bias
    pos = [(i, j) for i in range(win) for j in range(win)]
    bias = torch.stack([torch.stack([table[kp[0] - qp[0] + win - 1, kp[1] - qp[1] + win - 1] for kp in pos])
                        for qp in pos])
    out = torch.zeros(b, heads * d, h, w)
    for y0 in range(0, h, win):
        for x0 in range(0, w, win):
            def cut(t):
                return t[:, :, y0:y0 + win, x0:x0 + win].reshape(b, heads, d, win * win)
            qw, kw, vw = cut(q), cut(k), cut(v)
            logits = torch.einsum("bhdi,bhdj->bhij", qw, kw) * d ** -0.5 + bias
            ow = torch.einsum("bhij,bhdj->bhdi", logits.softmax(-1), vw)
            out[:, :, y0:y0 + win, x0:x0 + win] = ow.reshape(b, heads * d, win, win)
    return attn.proj(out)


def test_window_attention_matches_a_naive_reference():
    torch.manual_seed(3)
    attn = WindowAttention(6, 10, heads=2, window=3, head_dim=4)
    with torch.no_grad():
        attn.relative_position_bias.normal_()  # make the bias (and its orientation) matter
        x = torch.randn(2, 6, 6, 9)
        torch.testing.assert_close(attn(x), _reference_window_attention(attn, x))
        # a map the authors' code rejects (not whole windows): padded keys are masked out, so whole
        # windows are unchanged and a partial window attends only within the map
        x = torch.randn(1, 6, 7, 5)
        out = attn(x)
        assert out.shape == (1, 10, 7, 5)
        torch.testing.assert_close(out[:, :, :6, :3], attn(x[:, :, :6, :3]))
        torch.testing.assert_close(out[:, :, 6:, 3:], attn(x[:, :, 6:, 3:]))


def test_window_attention_supports_double_backward():
    attn = WindowAttention(4, 4, heads=1, window=2, head_dim=4)
    x = torch.randn(1, 4, 4, 4)
    loss = attn(x).pow(2).sum()
    (g,) = torch.autograd.grad(loss, attn.q.weight, create_graph=True)
    (hv,) = torch.autograd.grad(g.sum(), attn.kv.weight)
    assert torch.isfinite(hv).all() and hv.abs().sum() > 0


def test_drop_path_schedule_and_eval_determinism():
    model = AlterNet(depths=(1, 2), msa=(0, 1), heads=(1, 2), widths=(8, 16), head_dim=4, drop_path_rate=0.2)
    rates = [b.drop_path for stage in model.stages for b in stage]
    assert rates == pytest.approx([0.0, 0.1, 0.2])
    x = torch.randn(2, 3, 16, 16)
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(model(x), model(x))


@pytest.mark.parametrize("spec", ["demo_alternet", "alternet18_cifar", "alternet18"])
def test_blocks_are_whole_residual_blocks(spec):
    model = load_model(spec)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 1.5)
    block_list = blocks(model)
    kinds = [b.kind for b in block_list]
    assert kinds[0] == "stem" and kinds[-1] == "head" and "mlp" not in kinds
    body = [b for b in block_list[1:-1]]
    assert [b.name for b in body] == [f"stages.{s}.{j}" for s, st in enumerate(model.stages) for j in range(len(st))]
    assert [b.kind for b in body] == ["msa" if isinstance(m, AttentionBlock) else "conv"
                                      for st in model.stages for m in st]
    assert all(b.skippable for b in body)
    assert [b.downsamples for b in body] == [s > 0 and j == 0 for s, st in enumerate(model.stages) for j in range(len(st))]
    x = torch.randn(2, *model.pretrained_cfg["input_size"])
    with torch.no_grad():
        torch.testing.assert_close(run_blocks(block_list, x), model(x), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name,path,zero", [
    ("stages.2.1", (2, 1), lambda b: (b.attn.proj.weight.zero_(), b.attn.proj.bias.zero_())),  # MSA block
    ("stages.1.0", (1, 0), lambda b: b.conv2.weight.zero_()),  # downsampling conv: shortcut conv stays
])
def test_lesion_equals_zeroed_branch(name, path, zero):
    model = load_model("alternet18_cifar")
    x = torch.randn(3, 3, 32, 32)
    block_list = blocks(model)
    index = [b.name for b in block_list].index(name)
    with torch.no_grad():
        _, outs = run_blocks(block_list, x, collect=True)
        lesioned, outs_skip = run_blocks(block_list, x, skip=[name], collect=True)
        for i in range(index):
            torch.testing.assert_close(outs_skip[i], outs[i], rtol=0, atol=0)
        assert not torch.allclose(lesioned, outs[-1])
        zero(model.stages[path[0]][path[1]])
        torch.testing.assert_close(lesioned, model(x), rtol=1e-4, atol=1e-5)


def test_shipped_demo_weights_load():
    for name in ("demo_resnet", "demo_alternet"):
        model = load_model(name, pretrained=True)
        assert model.fc.weight.abs().sum() > 0
