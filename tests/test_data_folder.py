"""Tests for vitlens.data.folder: ImageFolder trees, with and without train/val sub-folders."""
import numpy as np
import pytest
import torch
from PIL import Image

from vitlens.data import load_data
from vitlens.errors import VitlensError


def _image_tree(root, classes=("cat", "dog"), per_class=3, size=(48, 40)):
    rng = np.random.default_rng(0)
    for name in classes:
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            pixels = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
            Image.fromarray(pixels).save(root / name / f"{i}.png")


def test_image_folder(tmp_path, configured_model):
    _image_tree(tmp_path / "imgs")
    data = load_data(f"folder:{tmp_path / 'imgs'}", model=configured_model)
    assert len(data) == 6 and data.num_classes == 2 and data.classes == ["cat", "dog"]
    x, y = data[5]
    assert x.shape == (3, 32, 32) and x.dtype == torch.float32 and y == 1
    assert data.spec == f"folder:{tmp_path / 'imgs'}"
    assert len(load_data(f"folder:{tmp_path / 'imgs'}", samples=2)) == 2


def test_image_folder_with_train_and_val(tmp_path):
    _image_tree(tmp_path / "train", per_class=3)
    _image_tree(tmp_path / "val", per_class=1)
    assert len(load_data(f"folder:{tmp_path}", split="train")) == 6
    assert len(load_data(f"folder:{tmp_path}", split="test")) == 2


def test_missing_or_empty_folder_raises(tmp_path):
    with pytest.raises(VitlensError, match="not found"):
        load_data(f"folder:{tmp_path / 'nope'}")
    with pytest.raises(VitlensError, match="no images"):
        load_data(f"folder:{tmp_path}")
