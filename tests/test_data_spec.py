"""Tests for vitlens.data.spec: spec parsing and errors, the loader."""
import pytest
import torch

from vitlens.data import load_data, make_loader
from vitlens.errors import VitlensError


def test_loader_shuffle_is_seeded():
    data = load_data("digits", samples=40)

    def first_labels(seed):
        return next(iter(make_loader(data, batch_size=40, shuffle=True, seed=seed)))[1]

    assert torch.equal(first_labels(0), first_labels(0))
    assert not torch.equal(first_labels(0), first_labels(1))
    x, y = next(iter(make_loader(data, batch_size=8)))
    assert x.shape == (8, 3, 32, 32) and y.dtype == torch.int64
    assert len(make_loader(data, batch_size=16, drop_last=True)) == 2


@pytest.mark.parametrize("spec", ["imagenet", "digits:extra", "synthetic:colour=3", "synthetic:classes=1", "", "folder:"])
def test_bad_specs_raise(spec):
    with pytest.raises(VitlensError) as error:
        load_data(spec)
    assert "\n" not in str(error.value)


def test_unknown_spec_lists_known_ones_and_bad_split():
    with pytest.raises(VitlensError, match="cifar10.*synthetic"):
        load_data("mnist")
    with pytest.raises(VitlensError, match="split"):
        load_data("digits", split="val")
