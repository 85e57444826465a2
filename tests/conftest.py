"""Shared test set-up: no network, a private cache per test session, seeded torch; tiny models and data
that several test files use."""
import os

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

# Nothing in the tests may download: make the Hugging Face hub fail fast instead of trying.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
# The Results shipped with the package (vitlens.store.shipped) would answer the demo requests the tests
# compute and check: off here (workers and servers the tests start inherit it); tests/test_shipped.py
# turns them on.
os.environ.setdefault("VITLENS_DEMO_RESULTS", "off")
torch.set_num_threads(min(2, torch.get_num_threads()))


@pytest.fixture(autouse=True)
def _private_cache(tmp_path_factory, monkeypatch):
    """Every test gets its own result cache folder (never the user's), so each dashboard test starts
    its own embedded worker; only the tests about the interactive lane also start an interactive
    worker (they set VITLENS_INTERACTIVE_WORKERS themselves). A second worker process per page test
    is one more torch import on 2 cores; one page test missed its 120 s limit with it in a run that
    shared the cores with a second test run."""
    monkeypatch.setenv("VITLENS_CACHE_DIR", str(tmp_path_factory.mktemp("cache") / "results"))
    monkeypatch.setenv("VITLENS_INTERACTIVE_WORKERS", "0")
    torch.manual_seed(0)


# ----------------------------------------------------------------------------- the device under test

TEST_DEVICE = torch.device(os.environ.get("VITLENS_TEST_DEVICE") or "cpu")
if TEST_DEVICE.type == "cuda":  # the tests' own references in float32 too, as vitlens computes (device.full_precision)
    torch.backends.cudnn.conv.fp32_precision = torch.backends.cuda.matmul.fp32_precision = "ieee"


def device_under_test() -> torch.device:
    """The device the engine tests put models and data on: VITLENS_TEST_DEVICE (default cpu;
    benchmarks/gpu_check.sh sets cuda on a GPU machine); the calling test is skipped when CUDA is
    asked for and none is visible. References stay on the CPU."""
    if TEST_DEVICE.type == "cuda" and not torch.cuda.is_available():
        pytest.skip("VITLENS_TEST_DEVICE=cuda but no CUDA device is visible")
    return TEST_DEVICE


@pytest.fixture
def device():
    """`device_under_test()` as a fixture."""
    return device_under_test()


# ----------------------------------------------------------------------------- shared tiny models and data


class ConfiguredModel(torch.nn.Module):
    """Stands in for a vitlens model where only the timm-style pretrained_cfg matters (data tests)."""

    pretrained_cfg = {"input_size": (3, 32, 32), "mean": (0.4914, 0.4822, 0.4465), "std": (0.247, 0.243, 0.261)}


@pytest.fixture
def configured_model():
    return ConfiguredModel()


def _tiny_cnn(seed=0):
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                          nn.Conv2d(8, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU(),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 10))
    with torch.no_grad():  # non-trivial BatchNorm statistics, so eval mode matters
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 1.5)
    return model.eval()


def _tiny_data(n=40, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 3, 8, 8, generator=g)
    y = torch.randint(0, 10, (n,), generator=g)
    return torch.utils.data.TensorDataset(x, y)


def _plain_eval(model, dataset):
    """Loss the obvious way: one batch of everything (on the model's device), F.cross_entropy."""
    device = next(model.parameters()).device
    x = torch.stack([dataset[i][0] for i in range(len(dataset))]).to(device)
    y = torch.stack([torch.as_tensor(dataset[i][1]) for i in range(len(dataset))]).to(device)
    with torch.no_grad():
        logits = model(x)
    return F.cross_entropy(logits, y).item(), (logits.argmax(1) == y).float().mean().item()


@pytest.fixture
def tiny_cnn():
    """tiny_cnn(seed=0): a small conv net with BatchNorm (non-trivial running statistics), in eval mode."""
    return _tiny_cnn


@pytest.fixture
def tiny_data():
    """tiny_data(n=40, seed=0): a TensorDataset of n random 3x8x8 images with labels 0..9."""
    return _tiny_data


@pytest.fixture
def plain_eval():
    """plain_eval(model, dataset) -> (mean NLL, accuracy), computed the obvious way (the reference)."""
    return _plain_eval
