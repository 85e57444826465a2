"""Tests for vitlens.data.mixing: soft targets (label smoothing, mixup, cutmix)."""
import pytest
import torch

from vitlens.data import soft_targets


def _batch(n=8, classes=10):
    generator = torch.Generator().manual_seed(0)
    return torch.randn(n, 3, 16, 16, generator=generator), torch.arange(n) % classes


def test_soft_targets_off_is_one_hot_and_x_unchanged():
    x, y = _batch()
    mixed, targets = soft_targets(x, y, 10)
    assert mixed is x
    assert torch.equal(targets, torch.nn.functional.one_hot(y, 10).float())


@pytest.mark.parametrize("options", [
    {"mixup_alpha": 0.8},
    {"cutmix_alpha": 1.0},
    {"label_smoothing": 0.1},
    {"mixup_alpha": 0.8, "cutmix_alpha": 1.0, "label_smoothing": 0.1},
])
def test_soft_targets_rows_sum_to_one(options):
    x, y = _batch()
    for seed in range(5):
        mixed, targets = soft_targets(x, y, 10, generator=torch.Generator().manual_seed(seed), **options)
        assert mixed.shape == x.shape and targets.shape == (8, 10)
        torch.testing.assert_close(targets.sum(1), torch.ones(8))
        assert targets.min() >= 0


def test_label_smoothing_values():
    x, y = _batch()
    _, targets = soft_targets(x, y, 10, label_smoothing=0.1)
    assert targets[0, 0].item() == pytest.approx(0.91) and targets[0, 1].item() == pytest.approx(0.01)


def test_cutmix_label_weight_is_pasted_area():
    x = torch.zeros(4, 1, 10, 10)
    x[1:] = 1.0  # image 0 is black, the others white
    y = torch.tensor([0, 1, 1, 1])
    for seed in range(10):
        mixed, targets = soft_targets(x, y, 2, cutmix_alpha=1.0, generator=torch.Generator().manual_seed(seed))
        # the share of each image that still holds its own pixels equals its own-label weight
        own = (mixed == x).float().mean(dim=(1, 2, 3))
        torch.testing.assert_close(targets.sum(1), torch.ones(4))
        # image 0 (black) gets white pixels only from label-1 images: its label-1 weight is the white area
        torch.testing.assert_close(targets[0, 1], 1 - own[0])


def test_mixup_is_reproducible_with_generator():
    x, y = _batch()
    a = soft_targets(x, y, 10, mixup_alpha=0.8, generator=torch.Generator().manual_seed(7))
    b = soft_targets(x, y, 10, mixup_alpha=0.8, generator=torch.Generator().manual_seed(7))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
