"""`folder:PATH`: an ImageFolder tree (one sub-folder per class), PATH/train and PATH/val as splits."""
from __future__ import annotations

import functools
import os
import warnings
from pathlib import Path

from ..errors import VitlensError
from .datasets import TransformedDataset, subset_indices
from .transforms import pil_transform


def read_image(path: str, root: Path):
    """An image as RGB, or one line naming the file (relative to ROOT: class folder and name). A
    decompression bomb (more pixels than PIL's `Image.MAX_IMAGE_PIXELS`) is refused from its header,
    before any pixel is decoded."""
    from PIL import Image, UnidentifiedImageError  # deferred with torchvision: only image folders need it

    name = os.path.relpath(path, root)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with open(path, "rb") as handle:
                image = Image.open(handle)
                image.load()
                return image.convert("RGB")
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise VitlensError(f"image {name} in {root} is a decompression bomb (over {Image.MAX_IMAGE_PIXELS:,} "
                           "pixels); it was not decoded") from None
    except (OSError, UnidentifiedImageError, SyntaxError, ValueError) as err:
        reason = (str(err).splitlines() or [type(err).__name__])[0][:120]
        raise VitlensError(f"cannot read image {name} in {root} ({reason})") from None


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
        base = datasets.ImageFolder(str(folder), loader=functools.partial(read_image, root=folder))
    except (FileNotFoundError, OSError) as error:
        reason = (str(error).splitlines() or ["no images"])[0]
        raise VitlensError(f"no images in {folder} ({reason}): use one sub-folder of images per class") from None
    keep = subset_indices(len(base), samples, seed)
    transform = pil_transform(cfg, augment, resize_crop=True)
    return TransformedDataset(base, keep, transform, cfg, spec=f"folder:{path}", split=split,
                              classes=list(base.classes), num_classes=len(base.classes),
                              augment=augment, seed=seed)
