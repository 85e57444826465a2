"""The paper's released CIFAR-100 checkpoints load into the registered models.

The fixtures (tests/fixtures/released, made by scripts/make_released_fixtures.py) are small
checkpoints in the released format, written by the code that wrote the real ones: timm 0.5.4 for
ViT-Ti, PiT-Ti and Swin-Ti, the authors' models/resnet.py for ResNet-50, with the logits that code
computed. Each must give the same logits in vitlens, and a file of the other convention must say
which registered model it fits.
"""
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from vitlens import VitlensError
from vitlens.cli import main
from vitlens.models import check_blocks, load_checkpoint, load_model, read_state_dict
from vitlens.models.convert import convert_state_dict
from vitlens.models.released import RELEASED, released_checkpoint

HERE = Path(__file__).parent / "fixtures" / "released"
MANIFEST = json.loads((HERE / "manifest.json").read_text())
RELEASED_FIXTURES = sorted(n for n, e in MANIFEST.items() if e["kind"] == "released")


def _recorded(name):
    io = load_file(str(HERE / MANIFEST[name]["io"]))
    return io["x"], io["logits"]


def test_fixtures_cover_the_four_released_checkpoints():
    assert {MANIFEST[n]["released"] for n in RELEASED_FIXTURES} == {r.file for r in RELEASED}
    for name in RELEASED_FIXTURES:
        entry = MANIFEST[name]
        assert released_checkpoint(entry["model"]).file == entry["released"]
        assert (HERE / entry["file"]).stat().st_size < 300_000
        payload = torch.load(HERE / entry["file"], map_location="cpu", weights_only=True)
        assert set(payload) == {"name", "state_dict"}  # the released format (the authors' models._save)


@pytest.mark.parametrize("name", RELEASED_FIXTURES)
def test_released_fixture_reproduces_logits(name):
    entry = MANIFEST[name]
    model = load_model(entry["model"], **entry["model_args"])
    load_checkpoint(model, HERE / entry["file"])
    x, want = _recorded(name)
    with torch.no_grad():
        got = model(x)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    ok, diff = check_blocks(model, x)  # the block split still reproduces the converted model
    assert ok, diff


@pytest.mark.parametrize("name", RELEASED_FIXTURES)
def test_registered_config_takes_the_full_size_layout(name):
    """Key -> shape of the full-size released model (same code as the fixture) fits the registered
    model with only num_classes=100: the registered config is the authors' one."""
    entry = MANIFEST[name]
    layout = json.loads((HERE / entry["full_layout"]).read_text())
    with torch.device("meta"):
        model = load_model(entry["model"], num_classes=100)
        state = {k: torch.empty(shape) for k, shape in layout.items()}
    converted, _ = convert_state_dict(state, model)
    own = model.state_dict()
    assert sorted(converted) == sorted(own)
    assert {k: tuple(v.shape) for k, v in converted.items()} == {k: tuple(v.shape) for k, v in own.items()}


def test_old_layouts_are_what_the_converters_handle():
    """The fixtures really are in the old layouts (so the conversions are exercised)."""
    pit = read_state_dict(HERE / MANIFEST["pit_ti_cifar100_tiny"]["file"])
    assert "transformers.0.pool.conv.weight" in pit and "transformers.2.pool.conv.weight" not in pit
    swin = read_state_dict(HERE / MANIFEST["swin_ti_cifar100_tiny"]["file"])
    assert "layers.0.downsample.reduction.weight" in swin and "head.weight" in swin
    resnet = read_state_dict(HERE / MANIFEST["resnet_50_cifar100_tiny"]["file"])
    assert "layer0.0.weight" in resnet and "classifier.0.dense.weight" in resnet


def _one_line(err):
    return "\n" not in str(err.value)


def test_other_convention_names_the_mismatch_and_the_fitting_model():
    entry = MANIFEST["swin_ti_p2_cifar100_tiny"]
    model = load_model("swin_ti_cifar", **entry["model_args"])  # the paper's patch-1 Swin
    with pytest.raises(VitlensError) as err:
        load_checkpoint(model, HERE / entry["file"])
    text = str(err.value)
    assert _one_line(err)
    assert "patch_embed.proj.weight (4, 3, 2, 2) vs model (4, 3, 1, 1)" in text
    assert "it fits the registered model swin_ti_cifar_p2" in text and "patch_size=2" in text
    # ...and it does: the suggested model reproduces the old code's logits
    fit = load_model(entry["fits"], **entry["model_args"])
    load_checkpoint(fit, HERE / entry["file"])
    x, want = _recorded("swin_ti_p2_cifar100_tiny")
    with torch.no_grad():
        torch.testing.assert_close(fit(x), want, rtol=1e-5, atol=1e-5)


def test_pit_stride_mismatch(tmp_path):
    args = dict(base_dims=[4, 4, 4], depth=[1, 1, 1], num_classes=100)
    torch.save({"state_dict": load_model("pit_ti_cifar_s2", **args).state_dict()}, tmp_path / "s2.pth.tar")
    with pytest.raises(VitlensError, match=r"pos_embed \(1, 8, 16, 16\) vs model \(1, 8, 31, 31\).*"
                                           r"fits the registered model pit_ti_cifar_s2 \(stride=2") as err:
        load_checkpoint(load_model("pit_ti_cifar", **args), tmp_path / "s2.pth.tar")
    assert _one_line(err)


def test_wrong_num_classes_says_which_model_args_fit():
    entry = MANIFEST["vit_ti_cifar100_tiny"]
    args = {k: v for k, v in entry["model_args"].items() if k != "num_classes"}
    with pytest.raises(VitlensError, match=r"head\.weight \(100, 24\) vs model \(10, 24\).*it fits vit_ti_cifar "
                                           r"with --model-args '.*\"num_classes\": 100") as err:
        load_checkpoint(load_model("vit_ti_cifar", **args), HERE / entry["file"])
    assert _one_line(err)


def test_url_is_not_downloaded():
    with pytest.raises(VitlensError, match="does not download") as err:
        load_checkpoint(load_model("demo_vit"), RELEASED[1].url)
    assert _one_line(err) and "curl" in str(err.value)


def test_cli_blocks_with_released_fixture(tmp_path, capsys):
    entry = MANIFEST["pit_ti_cifar100_tiny"]
    common = ["blocks", "--model", "pit_ti_cifar", "--model-args", json.dumps(entry["model_args"])]
    assert main(common + ["--checkpoint", str(HERE / entry["file"]), "--out", str(tmp_path / "b.csv")]) == 0
    out = capsys.readouterr().out
    assert "transformers.1.pool" in out and "stem" in out
    bad = MANIFEST["swin_ti_p2_cifar100_tiny"]
    assert main(["blocks", "--model", "swin_ti_cifar", "--model-args", json.dumps(bad["model_args"]),
                 "--checkpoint", str(HERE / bad["file"])]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "swin_ti_cifar_p2" in err


def test_models_lists_released_checkpoints(capsys):
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    for r in RELEASED:
        line = next(ln for ln in out.splitlines() if ln.startswith(r.model + " "))
        assert "released" in line
        assert r.url in out
    assert "curl" in out


@pytest.mark.parametrize("spec,kwargs", [
    ("swin_ti_cifar_p2", dict(embed_dim=8, depths=[2, 2, 2, 2], num_heads=[1, 2, 4, 8])),
    ("pit_ti_cifar_s2", dict(base_dims=[4, 4, 4], depth=[1, 1, 1])),
    ("resnet50_cifar", dict(channels=[2, 4, 8, 16], stem_width=2)),
])
def test_other_variants_split_into_blocks(spec, kwargs):
    model = load_model(spec, **kwargs)
    ok, diff = check_blocks(model, torch.randn(2, 3, 32, 32))
    assert ok, diff
