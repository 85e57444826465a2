"""`cifar10`, `cifar100`: torchvision's CIFAR from a root folder; downloads only when asked."""
from __future__ import annotations

import os
from pathlib import Path

from ..errors import VitlensError
from .datasets import TransformedDataset, subset_indices
from .transforms import pil_transform

CIFAR = {
    "cifar10": {"title": "CIFAR-10", "folder": "cifar-10-batches-py", "num_classes": 10,
                "files": ("data_batch_1", "data_batch_5", "test_batch", "batches.meta")},
    "cifar100": {"title": "CIFAR-100", "folder": "cifar-100-python", "num_classes": 100,
                 "files": ("train", "test", "meta")},
}


def default_root() -> str:
    """The folder that holds downloadable data sets: $VITLENS_DATA_ROOT or ~/.cache/vitlens/data."""
    root = os.environ.get("VITLENS_DATA_ROOT") or os.path.join("~", ".cache", "vitlens", "data")
    return os.path.abspath(os.path.expanduser(root))


def cifar_available(name: str, root: str) -> bool:
    """Whether CIFAR `name` lies unpacked in `root` (no download needed)."""
    folder = Path(root) / CIFAR[name]["folder"]
    return all((folder / f).is_file() for f in CIFAR[name]["files"])


def load(name, split, cfg, augment, samples, seed, root, download) -> TransformedDataset:
    from torchvision import datasets  # deferred: torchvision is heavy and only the image sets need it

    info = CIFAR[name]
    root = os.path.abspath(os.path.expanduser(root or default_root()))
    if not download and not cifar_available(name, root):
        raise VitlensError(f"{info['title']} not found in {root}: put {info['folder']} there, "
                           "or pass --download (needs network)")
    make = datasets.CIFAR10 if name == "cifar10" else datasets.CIFAR100
    try:
        base = make(root, train=(split == "train"), download=download)
    except Exception as error:  # torchvision raises RuntimeError, URLError, OSError, ...
        reason = (str(error).splitlines() or [type(error).__name__])[0]
        what = "could not download" if download else "could not read"
        raise VitlensError(f"{what} {info['title']} in {root} ({reason}); put {info['folder']} there, "
                           "or pass --download (needs network)") from None
    keep = subset_indices(len(base), samples, seed)
    transform = pil_transform(cfg, augment, resize_crop=False, native=(32, 32))
    return TransformedDataset(base, keep, transform, cfg, spec=name, split=split, classes=list(base.classes),
                              num_classes=info["num_classes"], augment=augment, seed=seed)
