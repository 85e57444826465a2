"""Tests for vitlens.data.synthetic: deterministic, separable gratings."""
import torch

from vitlens.data import load_data


def test_synthetic_is_deterministic_and_splits_differ():
    a = load_data("synthetic:classes=4,n=64", split="train")
    b = load_data("synthetic:classes=4,n=64", split="train", seed=9)
    test = load_data("synthetic:classes=4,n=64", split="test")
    assert torch.equal(a.x, b.x) and torch.equal(a.targets, b.targets)
    assert not torch.equal(a.x, test.x)
    assert a.num_classes == 4 and len(a) == 64 and a.x.shape[1:] == (3, 32, 32)
    assert torch.bincount(a.targets).tolist() == [16] * 4
    assert a.spec == "synthetic:classes=4,n=64,noise=0.25"
    assert load_data("synthetic").spec == "synthetic:classes=10,n=512,noise=0.25"


def test_synthetic_classes_are_separable():
    # nearest class mean of the Fourier amplitude: orientation/frequency decide the class
    train, test = load_data("synthetic:n=400", split="train"), load_data("synthetic:n=200", split="test")

    def amplitude(data):
        return torch.fft.fft2(data.x[:, 0]).abs().flatten(1)

    centroids = torch.stack([amplitude(train)[train.targets == k].mean(0) for k in range(10)])
    predicted = torch.cdist(amplitude(test), centroids).argmin(1)
    assert (predicted == test.targets).float().mean() > 0.9
