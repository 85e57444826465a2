"""Data specs: parse a spec, load its data set (`load_data`), batch it (`make_loader`), list them all."""
from __future__ import annotations

import os

import torch
from torch.utils.data import DataLoader, Dataset

from ..errors import VitlensError
from . import cifar, digits, folder, synthetic, tensors
from .cifar import CIFAR, cifar_available, default_root
from .datasets import SPLITS
from .synthetic import SYNTHETIC_DEFAULTS
from .transforms import check_augment, data_config

KNOWN_SPECS = (
    "digits",
    "cifar10",
    "cifar100",
    "folder:PATH",
    "synthetic[:classes=K,n=N,noise=S]",
    "tensors:PATH",
)
ALIASES = {"default": "digits", "cifar-10": "cifar10", "cifar-100": "cifar100"}

# Data sets named without a path (the dashboard's picker; `folder:`/`tensors:` take one).
DATASET_NAMES = ("digits", "synthetic", *CIFAR)


def _parse_spec(spec: str) -> tuple[str, str]:
    """'name:arg' -> (name, arg); names are case-insensitive, args (paths) are not."""
    if not isinstance(spec, str) or not spec.strip():
        raise VitlensError(f"empty data spec; use one of: {', '.join(KNOWN_SPECS)}")
    name, _, arg = spec.strip().partition(":")
    name = ALIASES.get(name.lower(), name.lower())
    return name, arg


def _unknown_spec(spec: str) -> VitlensError:
    return VitlensError(f"unknown data spec {spec!r}; use one of: {', '.join(KNOWN_SPECS)}")


def load_data(
    spec: str,
    split: str = "test",
    samples: int | None = None,
    seed: int = 0,
    input_size=(3, 32, 32),
    mean=(0.5, 0.5, 0.5),
    std=(0.5, 0.5, 0.5),
    model=None,
    augment: str | None = None,
    root: str | None = None,
    download: bool = False,
    allow_nonfinite: bool = False,
) -> Dataset:
    """Load the data set named by `spec` (see the `vitlens.data` docstring) as `(x, y)` pairs.

    `model` (anything with a timm `pretrained_cfg`) overrides input_size/mean/std. `samples`
    keeps a subset chosen with `seed` (all items when None or larger than the set); `augment`
    is None, "crop_flip" or "randaugment" and draws from a generator seeded with `seed`.
    `root` and `download` only matter for CIFAR. `split` is ignored by `tensors:PATH`.
    """
    name, arg = _parse_spec(spec)
    if split not in SPLITS:
        raise VitlensError(f"split must be 'train' or 'test', got {split!r}")
    augment = check_augment(augment)
    if name == "tensors":
        return tensors.load(arg, augment, samples, seed, allow_nonfinite)
    cfg = data_config(model, input_size, mean, std)
    if name == "digits" and not arg:
        return digits.load(split, cfg, augment, samples, seed)
    if name == "synthetic":
        return synthetic.load(arg, split, cfg, augment, samples, seed)
    if name in CIFAR and not arg:
        return cifar.load(name, split, cfg, augment, samples, seed, root, download)
    if name == "folder":
        return folder.load(arg, split, cfg, augment, samples, seed)
    raise _unknown_spec(spec)


def make_loader(dataset: Dataset, batch_size: int = 64, shuffle: bool = False, seed: int = 0,
                drop_last: bool = False) -> DataLoader:
    """A single-process DataLoader; with shuffle=True the order comes from a generator seeded with `seed`."""
    if int(batch_size) < 1:
        raise VitlensError(f"batch size must be at least 1, got {batch_size}")
    generator = torch.Generator().manual_seed(int(seed)) if shuffle else None
    return DataLoader(dataset, batch_size=int(batch_size), shuffle=shuffle, generator=generator,
                      num_workers=0, drop_last=drop_last)


def list_datasets(root: str | None = None) -> list[dict]:
    """The data sets vitlens knows: name, spec, description, num_classes, sizes, offline availability."""
    root = os.path.abspath(os.path.expanduser(root or default_root()))
    split = digits.digits_split()
    synthetic_n = SYNTHETIC_DEFAULTS["n"]
    rows = [
        {"name": "digits", "spec": "digits", "num_classes": 10,
         "description": "embedded default: scikit-learn's 1797 real 8x8 handwritten digits, resized",
         "sizes": {"train": len(split["train"][1]), "test": len(split["test"][1])}, "offline": True},
    ]
    for name, info in CIFAR.items():
        rows.append({"name": name, "spec": name, "num_classes": info["num_classes"],
                     "description": f"{info['title']} (torchvision) from {root}",
                     "sizes": {"train": 50000, "test": 10000}, "offline": cifar_available(name, root)})
    rows += [
        {"name": "folder", "spec": "folder:PATH", "num_classes": None, "sizes": None, "offline": True,
         "description": "ImageFolder tree (one sub-folder per class; PATH/train + PATH/val used as splits)"},
        {"name": "synthetic", "spec": "synthetic[:classes=K,n=N,noise=S]",
         "num_classes": SYNTHETIC_DEFAULTS["classes"], "sizes": {"train": synthetic_n, "test": synthetic_n},
         "offline": True, "description": "oriented gratings, one orientation/frequency per class, plus noise"},
        {"name": "tensors", "spec": "tensors:PATH", "num_classes": None, "sizes": None, "offline": True,
         "description": ".npz or .safetensors with x (float NCHW) and y (int labels), used exactly as given"},
    ]
    return rows
