"""Model registry, block decomposition and lesion skips, against the models' own forward passes."""
import pytest
import torch
import torch.nn as nn

import vitlens
from vitlens import VitlensError
from vitlens.models import blocks, check_blocks, feature_map, load_model, run_blocks

# Every family the issue names, at its real architecture (CIFAR variants) or a small timm member.
FAMILIES = [
    ("demo_resnet", {}), ("demo_vit", {}), ("demo_alternet", {}),
    ("vit_ti_cifar", {}), ("resnet18_cifar", {}), ("resnet50_cifar", {}), ("swin_ti_cifar", {}),
    ("pit_ti_cifar", {}), ("alternet18_cifar", {}), ("alternet50_cifar", {}), ("alternet18", {}),
    ("timm:resnet18", {"num_classes": 10}), ("timm:vit_tiny_patch16_224", {"num_classes": 10, "img_size": 64}),
    ("timm:deit_tiny_distilled_patch16_224", {"num_classes": 10, "img_size": 64}),
    ("timm:swin_tiny_patch4_window7_224", {"num_classes": 10}), ("timm:pit_ti_224", {"num_classes": 10}),
    ("timm:convnext_atto", {"num_classes": 10}),
]


def _input(model, batch=2):
    return torch.randn(batch, *model.pretrained_cfg["input_size"])


@pytest.mark.parametrize("spec,kwargs", FAMILIES, ids=[f[0] for f in FAMILIES])
def test_blocks_reproduce_forward(spec, kwargs):
    model = load_model(spec, **kwargs)
    # Non-trivial norm statistics so that BatchNorm is not the identity in eval mode.
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 1.5)
    x = _input(model)
    block_list = blocks(model)
    with torch.no_grad():
        want = model(x)
        got = run_blocks(block_list, x)
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)
    assert block_list[0].kind == "stem" and block_list[-1].kind == "head"
    assert all(b.kind in vitlens.models.KINDS for b in block_list)
    assert not any(b.guessed for b in block_list)
    # every parameter belongs to exactly one block
    owned = [id(p) for b in block_list for p in b.parameters()]
    assert len(owned) == len(set(owned)) == len(list(model.parameters()))


def test_vit_blocks_are_residual_branches():
    model = load_model("vit_ti_cifar")
    kinds = [b.kind for b in blocks(model)]
    assert kinds == ["stem"] + ["msa", "mlp"] * 12 + ["head"]
    cfg = model.blocks[0].attn
    assert model.embed_dim == 192 and cfg.num_heads == 3 and cfg.qkv.bias is None
    assert model.patch_embed.patch_size == (2, 2)


def test_cifar_resnet_stem():
    model = load_model("resnet18_cifar")
    assert model.conv1.kernel_size == (3, 3) and model.conv1.stride == (1, 1)
    assert isinstance(model.maxpool, nn.Identity)
    assert model(torch.randn(1, 3, 32, 32)).shape == (1, 10)


def _zero_branch_reference(spec, name):
    """Independent lesion: zero the last layer of one residual branch, so the branch adds nothing."""
    model = load_model(spec)
    for m in model.modules():  # timm zero-inits the last BN of each block: make every branch count
        if isinstance(m, nn.BatchNorm2d):
            m.weight.data.uniform_(0.5, 1.5)
    x = _input(model, 3)
    block_list = blocks(model)
    index = [b.name for b in block_list].index(name)
    with torch.no_grad():
        lesioned = run_blocks(block_list, x, skip=[index])
        intact = run_blocks(block_list, x)
        _, outs = run_blocks(block_list, x, collect=True)
        _, outs_skip = run_blocks(block_list, x, skip=[name], collect=True)
    return model, x, block_list, index, lesioned, intact, outs, outs_skip


@pytest.mark.parametrize("spec,name,zero", [
    ("vit_ti_cifar", "blocks.3.attn", lambda m: (m.blocks[3].attn.proj.weight.zero_(), m.blocks[3].attn.proj.bias.zero_())),
    ("vit_ti_cifar", "blocks.5.mlp", lambda m: (m.blocks[5].mlp.fc2.weight.zero_(), m.blocks[5].mlp.fc2.bias.zero_())),
    ("resnet18_cifar", "layer2.1", lambda m: (m.layer2[1].bn2.weight.zero_(), m.layer2[1].bn2.bias.zero_())),
    # AlterNet's lesions (MSA and conv blocks) are tested in tests/test_alternet.py
])
def test_lesion_skip_changes_only_that_block(spec, name, zero):
    model, x, block_list, index, lesioned, intact, outs, outs_skip = _zero_branch_reference(spec, name)
    # blocks before the lesion are untouched; the lesioned block changes the output
    for i in range(index):
        torch.testing.assert_close(outs_skip[i], outs[i], rtol=0, atol=0)
    assert not torch.allclose(lesioned, intact)
    # the skipped model equals the real model with that branch's output layer zeroed
    with torch.no_grad():
        zero(model)
        reference = model(x)
    torch.testing.assert_close(lesioned, reference, rtol=1e-4, atol=1e-5)


def test_projection_shortcut_skip_keeps_shortcut():
    model = load_model("resnet18_cifar")
    block_list = blocks(model)
    b = next(b for b in block_list if b.name == "layer2.0")
    assert b.downsamples
    x = torch.randn(2, 64, 32, 32)
    with torch.no_grad():
        out = b(x, skip=True)
        want = torch.relu(model.layer2[0].downsample(x))
    torch.testing.assert_close(out, want)


def test_stem_and_head_cannot_be_skipped():
    model = load_model("demo_vit")
    with pytest.raises(VitlensError, match="no residual branch"):
        run_blocks(blocks(model), _input(model), skip=["stem"])


def test_generic_fallback_is_flagged_and_faithful():
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 4))
    model.eval()
    block_list = blocks(model)
    assert all(b.guessed for b in block_list)
    assert block_list[-1].kind == "head" and block_list[0].kind == "stem"
    ok, diff = check_blocks(model, torch.randn(2, 3, 8, 8), block_list)
    assert ok and diff == 0.0


def test_feature_map_drops_class_token():
    model = load_model("demo_vit")
    block_list = blocks(model)
    x = _input(model)
    with torch.no_grad():
        _, outs = run_blocks(block_list, x, collect=True)
    fmap = feature_map(outs[1], block_list[1])
    assert fmap.shape == (2, 64, 8, 8)
    torch.testing.assert_close(fmap[:, :, 0, 1], outs[1][:, 2, :])  # token 1+1 (after CLS) is pixel (0, 1)
    assert feature_map(outs[-1], block_list[-1]) is None


def test_describe_blocks_table():
    rows = vitlens.describe_blocks(load_model("demo_alternet"))
    assert [r["kind"] for r in rows] == ["stem", "conv", "conv", "msa", "conv", "msa", "conv", "msa", "head"]
    assert rows[-1]["output_shape"] == "10"
    assert sum(r["params"] for r in rows) == sum(p.numel() for p in load_model("demo_alternet").parameters())


def test_unknown_models_give_clear_errors():
    with pytest.raises(VitlensError, match="unknown model 'nope'"):
        load_model("nope")
    with pytest.raises(VitlensError, match="unknown timm model"):
        load_model("timm:not_a_real_net")
    with pytest.raises(VitlensError, match="does not take"):
        load_model("demo_resnet", no_such_argument=1)


def test_timm_pretrained_offline_gives_one_line_error(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    with pytest.raises(VitlensError) as info:
        load_model("timm:resnet18", pretrained=True)
    message = str(info.value)
    assert "\n" not in message and "--checkpoint" in message and "HF_HUB_OFFLINE" in message


def test_timm_kwargs_and_input_config():
    model = load_model("timm:vit_tiny_patch16_224", num_classes=10, img_size=32, patch_size=4)
    assert model.pretrained_cfg["input_size"] == (3, 32, 32)
    assert model(torch.randn(1, 3, 32, 32)).shape == (1, 10)
    assert model.vitlens_spec == {"model": "timm:vit_tiny_patch16_224",
                                  "model_args": {"num_classes": 10, "img_size": 32, "patch_size": 4}}
