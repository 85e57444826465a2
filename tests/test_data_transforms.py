"""Tests for vitlens.data.transforms: the model's input config, resizing, normalisation, augmentation."""
import pytest
import torch

from vitlens.data import load_data
from vitlens.errors import VitlensError


def test_digits_normalisation_and_channels():
    data = load_data("digits", mean=(0.5,) * 3, std=(0.5,) * 3)
    # pixels in [0, 1] -> [-1, 1]; blank background is exactly -1; channels are copies
    assert data.x.min() == -1.0 and data.x.max() <= 1.0 and data.x.max() > 0.9
    assert torch.equal(data.x[:, 0], data.x[:, 2])
    gray = load_data("digits", input_size=(1, 16, 16), mean=(0.0,), std=(1.0,))
    assert gray[0][0].shape == (1, 16, 16) and 0 <= gray.x.min() and gray.x.max() <= 1


def test_timm_model_config_sets_size_and_imagenet_stats():
    timm = pytest.importorskip("timm")
    model = timm.create_model("resnet18", num_classes=10, pretrained=False)
    data = load_data("digits", samples=4, model=model)
    assert data[0][0].shape == (3, 224, 224)
    assert data.data_config["mean"] == pytest.approx((0.485, 0.456, 0.406))
    assert data.data_config["std"] == pytest.approx((0.229, 0.224, 0.225))


def test_pretrained_cfg_mean_std_are_applied(configured_model):
    plain = load_data("digits", samples=8, mean=(0.0,) * 3, std=(1.0,) * 3)  # raw [0, 1] pixels
    data = load_data("digits", samples=8, model=configured_model)
    mean = torch.tensor(configured_model.pretrained_cfg["mean"]).view(3, 1, 1)
    std = torch.tensor(configured_model.pretrained_cfg["std"]).view(3, 1, 1)
    assert data.x.shape == (8, 3, 32, 32)
    torch.testing.assert_close(data.x, (plain.x - mean) / std)


@pytest.mark.parametrize("augment", ["crop_flip", "randaugment"])
def test_augmentation_is_reproducible_per_seed(augment):
    plain = load_data("digits", samples=16)
    a = load_data("digits", samples=16, augment=augment, seed=3)
    b = load_data("digits", samples=16, augment=augment, seed=3)
    xa = torch.stack([a[i][0] for i in range(16)])
    xb = torch.stack([b[i][0] for i in range(16)])
    assert xa.shape == plain.x.shape and torch.equal(xa, xb)
    assert not torch.equal(xa, plain.x)
    with pytest.raises(VitlensError, match="augment"):
        load_data("digits", augment="cutout")
