"""The model's input config and the image transforms: resize, channels, normalise, augment.

torchvision is imported inside the functions that need it: it is heavy, and the in-memory sets
(digits, synthetic) without augmentation never use it.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ..errors import VitlensError

AUGMENTS = ("crop_flip", "randaugment")


def data_config(model=None, input_size=(3, 32, 32), mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5)) -> dict:
    """Input size, mean, std, crop_pct and interpolation for a model (or the given values).

    A model with a timm-style `pretrained_cfg` (all vitlens and timm models) decides via
    `timm.data.resolve_data_config`; otherwise the arguments are used.
    """
    if model is not None and (getattr(model, "pretrained_cfg", None) or getattr(model, "default_cfg", None)):
        from timm.data import resolve_data_config  # deferred: timm is heavy, only models with a config need it

        cfg = dict(resolve_data_config({}, model=model))
    else:
        cfg = {"input_size": input_size, "mean": mean, "std": std,
               "crop_pct": 0.875, "interpolation": "bilinear"}
    size = cfg["input_size"]
    if isinstance(size, int):
        size = (3, size, size)
    if len(size) != 3 or min(size) < 1:
        raise VitlensError(f"input size must be (channels, height, width), got {tuple(size)}")
    channels = int(size[0])
    mean, std = tuple(float(m) for m in cfg["mean"]), tuple(float(s) for s in cfg["std"])
    if len(mean) == 1:
        mean = mean * channels
    if len(std) == 1:
        std = std * channels
    if len(mean) != channels or len(std) != channels or min(std) <= 0:
        raise VitlensError(f"mean/std need {channels} values (std > 0), got mean={mean} std={std}")
    cfg.update(input_size=tuple(int(s) for s in size), mean=mean, std=std)
    cfg.setdefault("crop_pct", 0.875)
    cfg.setdefault("interpolation", "bilinear")
    return cfg


def check_augment(augment):
    """None for no augmentation ("none", ""), else one of AUGMENTS (VitlensError otherwise)."""
    if augment is None or str(augment).lower() in ("", "none"):
        return None
    if augment not in AUGMENTS:
        raise VitlensError(f"unknown augment {augment!r}; use one of: none, {', '.join(AUGMENTS)}")
    return augment


def augment_ops(augment, height: int, width: int) -> list:
    """torchvision v2 ops for uint8 CHW images: random crop + flip, optionally RandAugment.

    crop_flip is the standard CIFAR recipe (4-pixel padding at 32 px, scaled with the size);
    RandAugment is Cubuk et al. 2020 with N=2, M=9 as in DeiT / the paper's training.
    """
    from torchvision.transforms import v2  # deferred: torchvision is heavy (module docstring)

    if augment is None:
        return []
    pad = max(1, round(min(height, width) / 8))
    ops = [v2.RandomCrop((height, width), padding=pad), v2.RandomHorizontalFlip()]
    if augment == "randaugment":
        ops.append(v2.RandAugment(num_ops=2, magnitude=9))
    return ops


def _interpolation(name: str):
    from torchvision.transforms import InterpolationMode  # deferred: torchvision is heavy (module docstring)

    return {"bicubic": InterpolationMode.BICUBIC, "nearest": InterpolationMode.NEAREST}.get(
        str(name), InterpolationMode.BILINEAR)


def pil_transform(cfg: dict, augment, resize_crop: bool, native: tuple[int, int] | None = None):
    """PIL image -> normalised float tensor.

    resize_crop=True is timm's evaluation transform: resize the short side to size/crop_pct,
    centre crop. Otherwise resize straight to the input size (skipped when it is `native`).
    """
    from torchvision.transforms import v2  # deferred: torchvision is heavy (module docstring)

    channels, height, width = cfg["input_size"]
    if channels not in (1, 3):
        raise VitlensError(f"image data sets give 1 or 3 channels, the model wants {channels}")
    ops = []
    if resize_crop:
        scale = math.floor(min(height, width) / float(cfg["crop_pct"]))
        ops += [v2.Resize(scale, interpolation=_interpolation(cfg["interpolation"]), antialias=True),
                v2.CenterCrop((height, width))]
    elif native != (height, width):
        ops.append(v2.Resize((height, width), antialias=True))
    if channels == 1:
        ops.append(v2.Grayscale(1))
    ops.append(v2.PILToTensor())
    ops += augment_ops(augment, height, width)
    ops += [v2.ToDtype(torch.float32, scale=True), v2.Normalize(cfg["mean"], cfg["std"])]
    return v2.Compose(ops)


def tensor_augment(augment, cfg: dict):
    """[0, 1] float CHW image -> augmented [0, 1] float image (via uint8, as torchvision's ops want)."""
    from torchvision.transforms import v2  # deferred: torchvision is heavy (module docstring)

    _, height, width = cfg["input_size"]
    return v2.Compose([v2.ToDtype(torch.uint8, scale=True), *augment_ops(augment, height, width),
                       v2.ToDtype(torch.float32, scale=True)])


def resize_images(images: torch.Tensor, cfg: dict) -> torch.Tensor:
    """[0, 1] images (N, c, h, w) -> (N, C, H, W) in [0, 1]: bilinear resize, copy to C channels."""
    channels, height, width = cfg["input_size"]
    if images.shape[-2:] != (height, width):
        shrinking = images.shape[-2] > height or images.shape[-1] > width
        images = F.interpolate(images, size=(height, width), mode="bilinear",
                               align_corners=False, antialias=shrinking).clamp_(0, 1)
    if images.shape[1] == 1 and channels != 1:
        images = images.expand(-1, channels, -1, -1)
    elif images.shape[1] != channels:
        raise VitlensError(f"these images have {images.shape[1]} channels, the model wants {channels}")
    return images


def normalise(images: torch.Tensor, cfg: dict) -> torch.Tensor:
    """(x - mean) / std per channel."""
    mean = torch.tensor(cfg["mean"]).view(-1, 1, 1)
    std = torch.tensor(cfg["std"]).view(-1, 1, 1)
    return images.sub(mean).div_(std)


def seeded_apply(transform, image, generator: torch.Generator):
    """Run a torchvision transform with torch's global RNG seeded from `generator`.

    torchvision draws from the global RNG; forking it keeps augmentation reproducible for a
    given data set seed (with num_workers=0) without disturbing the caller's RNG.
    """
    item_seed = int(torch.randint(0, 2**62, (1,), generator=generator))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(item_seed)
        return transform(image)
