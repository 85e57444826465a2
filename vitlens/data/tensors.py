"""`tensors:PATH`: x (float NCHW) and y (integer labels) from .npz or .safetensors, used exactly as given."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file

from ..errors import VitlensError
from .datasets import ExactTensorDataset, subset_indices


def _read_tensor_file(path: Path) -> dict:
    if not path.is_file():
        raise VitlensError(f"tensor file {path} not found: pass tensors:PATH to a .npz or .safetensors file")
    try:
        if path.suffix == ".npz":
            with np.load(path, allow_pickle=False) as arrays:
                return {k: torch.from_numpy(np.array(arrays[k])) for k in arrays.files if k in ("x", "y")}
        if path.suffix == ".safetensors":
            return {k: v for k, v in load_file(str(path)).items() if k in ("x", "y")}
    except Exception as error:  # corrupt or foreign file
        reason = (str(error).splitlines() or [type(error).__name__])[0]
        raise VitlensError(f"cannot read {path} ({reason}): save x and y with numpy.savez or safetensors") from None
    raise VitlensError(f"tensor file {path} must end in .npz or .safetensors")


def load(arg, augment, samples, seed, allow_nonfinite: bool = False) -> ExactTensorDataset:
    if not arg:
        raise VitlensError("tensors spec needs a path: tensors:PATH to a .npz or .safetensors file")
    if augment is not None:
        raise VitlensError("tensors:PATH data are used exactly as given: drop the augmentation")
    path = Path(os.path.abspath(os.path.expanduser(arg)))
    arrays = _read_tensor_file(path)
    for key in ("x", "y"):
        if key not in arrays:
            raise VitlensError(f"{path} has no {key!r} array: it needs x (float NCHW) and y (integer labels)")
    x, y = arrays["x"], arrays["y"]
    if x.dim() != 4 or not x.is_floating_point():
        raise VitlensError(f"x in {path} must be a 4-D float array (N, C, H, W), got {x.dim()}-D {x.dtype}")
    if y.dim() != 1 or y.is_floating_point() or y.is_complex() or y.dtype == torch.bool:
        raise VitlensError(f"y in {path} must be 1-D integer labels, got {y.dim()}-D {y.dtype}")
    if len(x) != len(y) or len(y) == 0:
        raise VitlensError(f"{path} has {len(x)} images but {len(y)} labels: they must match (and not be empty)")
    if not allow_nonfinite and not bool(torch.isfinite(x).all()):
        first = int((~torch.isfinite(x)).flatten(1).any(1).nonzero()[0])
        raise VitlensError(f"x in {path} has non-finite values (NaN or Inf), first in image {first}; "
                           "pass --allow-nonfinite to use it anyway")
    y = y.long()
    if int(y.min()) < 0:
        raise VitlensError(f"y in {path} has negative labels: use class indices 0..K-1")
    # float32 is what models take; exact for float32 (and float16) input.
    dataset = ExactTensorDataset(x.float(), y, spec=f"tensors:{path}", num_classes=int(y.max()) + 1)
    return _subset(dataset, samples, seed)


def _subset(dataset: ExactTensorDataset, samples, seed) -> ExactTensorDataset:
    keep = subset_indices(len(dataset), samples, seed)
    if len(keep) == len(dataset):
        return dataset
    return ExactTensorDataset(dataset.x[keep], dataset.targets[keep], spec=dataset.spec,
                              num_classes=dataset.num_classes, classes=dataset.classes)
