"""Shared test set-up: no network, a private cache per test session, seeded torch."""
import os

import pytest
import torch

# Nothing in the tests may download: make the Hugging Face hub fail fast instead of trying.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
torch.set_num_threads(min(2, torch.get_num_threads()))


@pytest.fixture(autouse=True)
def _private_cache(tmp_path_factory, monkeypatch):
    """Every test gets its own result cache folder (never the user's)."""
    monkeypatch.setenv("VITLENS_CACHE_DIR", str(tmp_path_factory.mktemp("cache") / "results"))
    torch.manual_seed(0)
