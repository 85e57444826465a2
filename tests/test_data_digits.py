"""Tests for vitlens.data.digits: the embedded default (sizes, classes, a fixed stratified split)."""
import torch

from vitlens.data import load_data


def test_digits_shapes_sizes_and_classes():
    test, train = load_data("digits"), load_data("digits", split="train")
    assert len(test) + len(train) == 1797
    assert abs(len(test) / 1797 - 0.2) < 0.01
    assert test.num_classes == 10 and test.classes == [str(d) for d in range(10)]
    assert test.spec == "digits" and load_data("default").spec == "digits"
    x, y = test[0]
    assert x.shape == (3, 32, 32) and x.dtype == torch.float32
    assert y.dtype == torch.int64 and 0 <= int(y) < 10
    # stratified: every class in both splits, in about the same proportion
    counts = torch.bincount(test.targets, minlength=10).float() / torch.bincount(train.targets, minlength=10)
    assert torch.all((counts > 0.23) & (counts < 0.27))


def test_digits_split_is_fixed_whatever_the_seed():
    a, b = load_data("digits", seed=0), load_data("digits", seed=5)
    assert torch.equal(a.x, b.x) and torch.equal(a.targets, b.targets)
