"""`folder:PATH`: an ImageFolder tree (one sub-folder per class), PATH/train and PATH/val as splits."""
from __future__ import annotations

import os
from pathlib import Path

from ..errors import VitlensError
from .datasets import TransformedDataset, subset_indices
from .transforms import pil_transform


def load(arg, split, cfg, augment, samples, seed) -> TransformedDataset:
    from torchvision import datasets  # deferred: torchvision is heavy and only the image sets need it

    if not arg:
        raise VitlensError("folder spec needs a path: folder:PATH (one sub-folder per class)")
    path = Path(os.path.abspath(os.path.expanduser(arg)))
    if not path.is_dir():
        raise VitlensError(f"image folder {path} not found: pass folder:PATH with one sub-folder per class")
    folder = path
    held_out = next((path / s for s in ("val", "test") if (path / s).is_dir()), None)
    if (path / "train").is_dir() and held_out is not None:
        folder = path / "train" if split == "train" else held_out
    try:
        base = datasets.ImageFolder(str(folder))
    except (FileNotFoundError, OSError) as error:
        reason = (str(error).splitlines() or ["no images"])[0]
        raise VitlensError(f"no images in {folder} ({reason}): use one sub-folder of images per class") from None
    keep = subset_indices(len(base), samples, seed)
    transform = pil_transform(cfg, augment, resize_crop=True)
    return TransformedDataset(base, keep, transform, cfg, spec=f"folder:{path}", split=split,
                              classes=list(base.classes), num_classes=len(base.classes),
                              augment=augment, seed=seed)
