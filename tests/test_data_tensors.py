"""Tests for vitlens.data.tensors: tensors:PATH (.npz, .safetensors) used exactly as given."""
import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from vitlens.data import load_data
from vitlens.errors import VitlensError


def _tensors():
    generator = torch.Generator().manual_seed(0)
    return torch.randn(6, 3, 5, 7, generator=generator), torch.tensor([0, 2, 1, 2, 0, 1])


def test_tensors_npz_round_trip_is_exact(tmp_path):
    x, y = _tensors()
    path = tmp_path / "d.npz"
    np.savez(path, x=x.numpy(), y=y.numpy().astype(np.int32))
    data = load_data(f"tensors:{path}", split="train", input_size=(3, 224, 224))
    assert torch.equal(torch.stack([data[i][0] for i in range(6)]), x)
    assert torch.equal(torch.stack([data[i][1] for i in range(6)]), y)
    assert data.num_classes == 3 and data.spec == f"tensors:{path}"


def test_tensors_safetensors_round_trip_is_exact(tmp_path):
    x, y = _tensors()
    path = tmp_path / "d.safetensors"
    save_file({"x": x, "y": y}, str(path))
    data = load_data(f"tensors:{path}")
    assert torch.equal(data.x, x) and torch.equal(data.targets, y)
    assert len(load_data(f"tensors:{path}", samples=4)) == 4


@pytest.mark.parametrize("arrays, message", [
    ({"x": np.zeros((2, 3, 4, 4), np.float32)}, "'y'"),
    ({"x": np.zeros((2, 4, 4), np.float32), "y": np.zeros(2, np.int64)}, "4-D"),
    ({"x": np.zeros((2, 3, 4, 4), np.float32), "y": np.zeros(3, np.int64)}, "match"),
    ({"x": np.zeros((2, 3, 4, 4), np.float32), "y": np.zeros(2, np.float32)}, "integer"),
    ({"x": np.zeros((2, 3, 4, 4), np.uint8), "y": np.zeros(2, np.int64)}, "float"),
])
def test_bad_tensor_files_raise(tmp_path, arrays, message):
    path = tmp_path / "bad.npz"
    np.savez(path, **arrays)
    with pytest.raises(VitlensError, match=message):
        load_data(f"tensors:{path}")


def test_unreadable_tensor_files_raise(tmp_path):
    (tmp_path / "junk.npz").write_bytes(b"not a zip file")
    (tmp_path / "d.pt").write_bytes(b"")
    for name in ("junk.npz", "d.pt", "missing.npz"):
        with pytest.raises(VitlensError) as error:
            load_data(f"tensors:{tmp_path / name}")
        assert "\n" not in str(error.value)
