"""Tests for vitlens.data.datasets: seeded subsets."""
import pytest
import torch

from vitlens.data import load_data, subset_indices
from vitlens.errors import VitlensError


def test_subset_is_deterministic_per_seed():
    a = load_data("digits", split="train", samples=50, seed=1)
    b = load_data("digits", split="train", samples=50, seed=1)
    c = load_data("digits", split="train", samples=50, seed=2)
    assert len(a) == 50
    assert torch.equal(a.x, b.x) and torch.equal(a.targets, b.targets)
    assert not torch.equal(a.x, c.x)
    assert torch.equal(subset_indices(100, 10, 3), subset_indices(100, 10, 3))
    assert not torch.equal(subset_indices(100, 10, 3), subset_indices(100, 10, 4))


def test_subset_larger_than_data_keeps_all_and_bad_samples_fail():
    assert len(load_data("digits", samples=10_000)) == len(load_data("digits"))
    with pytest.raises(VitlensError):
        load_data("digits", samples=0)
