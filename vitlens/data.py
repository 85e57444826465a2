"""Data sets for vitlens analyses.

`load_data(spec, ...)` turns a data SPEC into a `torch.utils.data.Dataset` of
`(x, y)` pairs: `x` a float32 CHW tensor, already resized and normalised the way the
model expects, `y` an integer class label. Specs:

- `digits` (alias `default`): the embedded default. scikit-learn's `load_digits()`, 1797
  real 8x8 handwritten digits in 10 classes that ship inside scikit-learn (no download).
  A fixed stratified 80/20 train/test split; pixels scaled to [0, 1], resized (bilinear) to
  the input size, copied to every channel, normalised with mean/std.
- `cifar10`, `cifar100`: torchvision's CIFAR from a root folder (`root`, else the
  `VITLENS_DATA_ROOT` environment variable, else `~/.cache/vitlens/data`); downloads only
  when `download=True`.
- `folder:PATH`: an ImageFolder tree (one sub-folder per class, e.g. ImageNet val).
  Evaluation transform: resize to size/crop_pct, centre crop, normalise. When PATH has a
  `train` and a `val` (or `test`) sub-folder, `split` picks one; otherwise PATH is used as is.
- `synthetic[:classes=K,n=N,noise=S]`: oriented gratings, one orientation/frequency per
  class, plus noise; deterministic, N images per split, learnable by small models.
- `tensors:PATH`: a `.npz` or `.safetensors` file with `x` (float, NCHW) and `y` (integer
  labels), used exactly as given: no resizing, no normalisation, no split.

Every data set has `.spec` (the canonical spec string, e.g. absolute paths), `.split`,
`.num_classes`, `.classes` (names, or None) and `.data_config` (input_size, mean, std, ...).
`samples=N` keeps a subset of N items chosen with `seed`; `augment` adds training
augmentation ("crop_flip" or "randaugment"), reproducible for a given seed.
"""

from __future__ import annotations

import functools
import math
import os
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

from .errors import VitlensError

SPLITS = ("train", "test")
AUGMENTS = ("crop_flip", "randaugment")
KNOWN_SPECS = (
    "digits",
    "cifar10",
    "cifar100",
    "folder:PATH",
    "synthetic[:classes=K,n=N,noise=S]",
    "tensors:PATH",
)
ALIASES = {"default": "digits", "cifar-10": "cifar10", "cifar-100": "cifar100"}

# Fixed seeds that do not depend on the user's seed: the data themselves never change.
DIGITS_SPLIT_SEED = 0
SYNTHETIC_SEED = 20220214
SYNTHETIC_DEFAULTS = {"classes": 10, "n": 512, "noise": 0.25}
SYNTHETIC_NATIVE_SIZE = 32

# Precompute the whole transformed tensor when it is at most this big, else transform per item.
PRECOMPUTE_BYTES = 256 * 2**20

CIFAR = {
    "cifar10": {"title": "CIFAR-10", "folder": "cifar-10-batches-py", "num_classes": 10,
                "files": ("data_batch_1", "data_batch_5", "test_batch", "batches.meta")},
    "cifar100": {"title": "CIFAR-100", "folder": "cifar-100-python", "num_classes": 100,
                 "files": ("train", "test", "meta")},
}


# ----------------------------------------------------------------------------- configuration


def default_root() -> str:
    """The folder that holds downloadable data sets: $VITLENS_DATA_ROOT or ~/.cache/vitlens/data."""
    root = os.environ.get("VITLENS_DATA_ROOT") or os.path.join("~", ".cache", "vitlens", "data")
    return os.path.abspath(os.path.expanduser(root))


def data_config(model=None, input_size=(3, 32, 32), mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5)) -> dict:
    """Input size, mean, std, crop_pct and interpolation for a model (or the given values).

    A model with a timm-style `pretrained_cfg` (all vitlens and timm models) decides via
    `timm.data.resolve_data_config`; otherwise the arguments are used.
    """
    if model is not None and (getattr(model, "pretrained_cfg", None) or getattr(model, "default_cfg", None)):
        from timm.data import resolve_data_config

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


def _parse_spec(spec: str) -> tuple[str, str]:
    """'name:arg' -> (name, arg); names are case-insensitive, args (paths) are not."""
    if not isinstance(spec, str) or not spec.strip():
        raise VitlensError(f"empty data spec; use one of: {', '.join(KNOWN_SPECS)}")
    name, _, arg = spec.strip().partition(":")
    name = ALIASES.get(name.lower(), name.lower())
    return name, arg


def _unknown_spec(spec: str) -> VitlensError:
    return VitlensError(f"unknown data spec {spec!r}; use one of: {', '.join(KNOWN_SPECS)}")


def _check_augment(augment):
    if augment is None or str(augment).lower() in ("", "none"):
        return None
    if augment not in AUGMENTS:
        raise VitlensError(f"unknown augment {augment!r}; use one of: none, {', '.join(AUGMENTS)}")
    return augment


def subset_indices(n: int, samples: int | None, seed: int = 0) -> torch.Tensor:
    """Sorted indices of a random subset of `samples` out of `n` items (all when None or >= n)."""
    if samples is None or samples >= n:
        return torch.arange(n)
    if samples < 1:
        raise VitlensError(f"samples must be a positive number, got {samples}")
    generator = torch.Generator().manual_seed(int(seed))
    return torch.randperm(n, generator=generator)[:samples].sort().values


# ----------------------------------------------------------------------------- transforms


def _augment_ops(augment, height: int, width: int) -> list:
    """torchvision v2 ops for uint8 CHW images: random crop + flip, optionally RandAugment.

    crop_flip is the standard CIFAR recipe (4-pixel padding at 32 px, scaled with the size);
    RandAugment is Cubuk et al. 2020 with N=2, M=9 as in DeiT / the paper's training.
    """
    from torchvision.transforms import v2

    if augment is None:
        return []
    pad = max(1, round(min(height, width) / 8))
    ops = [v2.RandomCrop((height, width), padding=pad), v2.RandomHorizontalFlip()]
    if augment == "randaugment":
        ops.append(v2.RandAugment(num_ops=2, magnitude=9))
    return ops


def _interpolation(name: str):
    from torchvision.transforms import InterpolationMode

    return {"bicubic": InterpolationMode.BICUBIC, "nearest": InterpolationMode.NEAREST}.get(
        str(name), InterpolationMode.BILINEAR)


def _pil_transform(cfg: dict, augment, resize_crop: bool, native: tuple[int, int] | None = None):
    """PIL image -> normalised float tensor.

    resize_crop=True is timm's evaluation transform: resize the short side to size/crop_pct,
    centre crop. Otherwise resize straight to the input size (skipped when it is `native`).
    """
    from torchvision.transforms import v2

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
    ops += _augment_ops(augment, height, width)
    ops += [v2.ToDtype(torch.float32, scale=True), v2.Normalize(cfg["mean"], cfg["std"])]
    return v2.Compose(ops)


def _resize_images(images: torch.Tensor, cfg: dict) -> torch.Tensor:
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


def _normalise(images: torch.Tensor, cfg: dict) -> torch.Tensor:
    mean = torch.tensor(cfg["mean"]).view(-1, 1, 1)
    std = torch.tensor(cfg["std"]).view(-1, 1, 1)
    return images.sub(mean).div_(std)


def _seeded_apply(transform, image, generator: torch.Generator):
    """Run a torchvision transform with torch's global RNG seeded from `generator`.

    torchvision draws from the global RNG; forking it keeps augmentation reproducible for a
    given data set seed (with num_workers=0) without disturbing the caller's RNG.
    """
    item_seed = int(torch.randint(0, 2**62, (1,), generator=generator))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(item_seed)
        return transform(image)


# ----------------------------------------------------------------------------- data set classes


class ImageTensorDataset(Dataset):
    """In-memory images in [0, 1] at their native size, resized and normalised for the model.

    Used for `digits` and `synthetic`. Without augmentation the transformed tensor is
    precomputed (`.x`) when it fits in PRECOMPUTE_BYTES.
    """

    def __init__(self, images, targets, cfg, *, spec, split, classes, num_classes, augment=None, seed=0):
        self.images, self.targets = images, targets.long()
        self.data_config, self.spec, self.split = cfg, spec, split
        self.classes, self.num_classes, self.augment = classes, num_classes, augment
        self._augment = None
        if augment is not None:
            from torchvision.transforms import v2

            _, height, width = cfg["input_size"]
            self._augment = v2.Compose([v2.ToDtype(torch.uint8, scale=True), *_augment_ops(augment, height, width),
                                        v2.ToDtype(torch.float32, scale=True)])
        self._generator = torch.Generator().manual_seed(int(seed))
        size = len(images) * math.prod(cfg["input_size"]) * 4
        self.x = None
        if augment is None and size <= PRECOMPUTE_BYTES:
            self.x = self._transform(images)

    def _transform(self, images):
        return _normalise(_resize_images(images, self.data_config), self.data_config)

    def __len__(self):
        return len(self.targets)

    def __getitem__(self, i):
        if self.x is not None:
            return self.x[i], self.targets[i]
        if self._augment is None:
            return self._transform(self.images[i : i + 1])[0], self.targets[i]
        image = _resize_images(self.images[i : i + 1], self.data_config)[0]
        image = _seeded_apply(self._augment, image, self._generator)
        return _normalise(image, self.data_config), self.targets[i]


class ExactTensorDataset(Dataset):
    """`x`, `y` tensors used exactly as given (the `tensors:PATH` spec)."""

    def __init__(self, x, y, *, spec, num_classes, classes=None):
        self.x, self.targets = x, y
        self.spec, self.split, self.num_classes, self.classes = spec, None, num_classes, classes
        self.data_config = {"input_size": tuple(x.shape[1:]), "mean": None, "std": None}

    def __len__(self):
        return len(self.targets)

    def __getitem__(self, i):
        return self.x[i], self.targets[i]


class TransformedDataset(Dataset):
    """A torchvision data set (PIL images) seen through `indices`, with our transform and metadata."""

    def __init__(self, base, indices, transform, cfg, *, spec, split, classes, num_classes,
                 augment=None, seed=0):
        self.base, self.indices, self.transform = base, indices.tolist(), transform
        self.data_config, self.spec, self.split = cfg, spec, split
        self.classes, self.num_classes, self.augment = classes, num_classes, augment
        self._generator = torch.Generator().manual_seed(int(seed))

    def __len__(self):
        return len(self.indices)

    def __getitem__(self, i):
        image, label = self.base[self.indices[i]]
        if self.augment is None:
            return self.transform(image), int(label)
        return _seeded_apply(self.transform, image, self._generator), int(label)


# ----------------------------------------------------------------------------- the specs


@functools.lru_cache(maxsize=1)
def _digits_split() -> dict:
    """load_digits() images in [0, 1] and a fixed stratified 80/20 split (same on every machine)."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = torch.from_numpy(digits.images / 16.0).float().unsqueeze(1)  # (1797, 1, 8, 8)
    labels = torch.from_numpy(digits.target).long()
    rng = np.random.default_rng(DIGITS_SPLIT_SEED)
    test = []
    for label in range(10):
        members = np.flatnonzero(digits.target == label)
        test.extend(rng.permutation(members)[: round(0.2 * len(members))])
    is_test = np.zeros(len(labels), dtype=bool)
    is_test[test] = True
    train_idx = torch.from_numpy(np.flatnonzero(~is_test))
    test_idx = torch.from_numpy(np.flatnonzero(is_test))
    return {"train": (images[train_idx], labels[train_idx]), "test": (images[test_idx], labels[test_idx])}


def _load_digits(split, cfg, augment, samples, seed):
    images, labels = _digits_split()[split]
    keep = subset_indices(len(labels), samples, seed)
    return ImageTensorDataset(images[keep], labels[keep], cfg, spec="digits", split=split,
                              classes=[str(d) for d in range(10)], num_classes=10,
                              augment=augment, seed=seed)


def _synthetic_params(arg: str) -> dict:
    params = dict(SYNTHETIC_DEFAULTS)
    for item in filter(None, (p.strip() for p in arg.split(","))):
        key, _, value = item.partition("=")
        key = key.strip().lower()
        if key not in params:
            raise VitlensError(f"unknown synthetic option {key!r}; use synthetic:classes=K,n=N,noise=S")
        try:
            params[key] = type(SYNTHETIC_DEFAULTS[key])(value)
        except ValueError:
            raise VitlensError(f"synthetic option {key} needs a number, got {value!r}") from None
    if not 2 <= params["classes"] <= 100:
        raise VitlensError(f"synthetic classes must be 2..100, got {params['classes']}")
    if not 1 <= params["n"] <= 200_000:
        raise VitlensError(f"synthetic n (images per split) must be 1..200000, got {params['n']}")
    if not 0 <= params["noise"] <= 10:
        raise VitlensError(f"synthetic noise must be 0..10, got {params['noise']}")
    return params


def synthetic_images(classes: int, n: int, noise: float, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Oriented sine gratings (N, 1, 32, 32) in [0, 1] and their labels, the same on every call.

    Class k gets one orientation out of ceil(sqrt(K)) and one spatial frequency between 2 and 12
    cycles per image; each image has a random phase, contrast, a little orientation/frequency
    jitter and Gaussian pixel noise. Train and test use different random draws.
    """
    generator = torch.Generator().manual_seed(SYNTHETIC_SEED + SPLITS.index(split))
    labels = (torch.arange(n) % classes)[torch.randperm(n, generator=generator)]
    n_orient = math.ceil(math.sqrt(classes))
    n_freq = math.ceil(classes / n_orient)
    freqs = torch.linspace(2.0, 12.0, n_freq) if n_freq > 1 else torch.tensor([4.0])

    def uniform(low, high):
        return low + (high - low) * torch.rand(n, generator=generator)

    theta = math.pi * (labels % n_orient).float() / n_orient
    theta = theta + uniform(-0.15, 0.15) * math.pi / n_orient
    freq = freqs[labels // n_orient] * uniform(0.93, 1.07)
    phase = uniform(0.0, 2 * math.pi)
    contrast = uniform(0.6, 1.0)

    coords = torch.arange(SYNTHETIC_NATIVE_SIZE).float() / SYNTHETIC_NATIVE_SIZE
    yy, xx = torch.meshgrid(coords, coords, indexing="ij")
    along = xx * torch.cos(theta).view(-1, 1, 1) + yy * torch.sin(theta).view(-1, 1, 1)
    wave = torch.cos(2 * math.pi * freq.view(-1, 1, 1) * along + phase.view(-1, 1, 1))
    images = 0.5 + 0.4 * contrast.view(-1, 1, 1) * wave
    images = images + noise * 0.5 * torch.randn(images.shape, generator=generator)
    return images.clamp(0, 1).unsqueeze(1), labels


def _load_synthetic(arg, split, cfg, augment, samples, seed):
    params = _synthetic_params(arg)
    images, labels = synthetic_images(params["classes"], params["n"], params["noise"], split)
    keep = subset_indices(len(labels), samples, seed)
    spec = "synthetic:" + ",".join(f"{k}={params[k]}" for k in ("classes", "n", "noise"))
    return ImageTensorDataset(images[keep], labels[keep], cfg, spec=spec, split=split,
                              classes=[f"grating{k}" for k in range(params["classes"])],
                              num_classes=params["classes"], augment=augment, seed=seed)


def _cifar_available(name: str, root: str) -> bool:
    folder = Path(root) / CIFAR[name]["folder"]
    return all((folder / f).is_file() for f in CIFAR[name]["files"])


def _load_cifar(name, split, cfg, augment, samples, seed, root, download):
    from torchvision import datasets

    info = CIFAR[name]
    root = os.path.abspath(os.path.expanduser(root or default_root()))
    if not download and not _cifar_available(name, root):
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
    transform = _pil_transform(cfg, augment, resize_crop=False, native=(32, 32))
    return TransformedDataset(base, keep, transform, cfg, spec=name, split=split, classes=list(base.classes),
                              num_classes=info["num_classes"], augment=augment, seed=seed)


def _load_folder(arg, split, cfg, augment, samples, seed):
    from torchvision import datasets

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
    transform = _pil_transform(cfg, augment, resize_crop=True)
    return TransformedDataset(base, keep, transform, cfg, spec=f"folder:{path}", split=split,
                              classes=list(base.classes), num_classes=len(base.classes),
                              augment=augment, seed=seed)


def _read_tensor_file(path: Path) -> dict:
    if not path.is_file():
        raise VitlensError(f"tensor file {path} not found: pass tensors:PATH to a .npz or .safetensors file")
    try:
        if path.suffix == ".npz":
            with np.load(path, allow_pickle=False) as arrays:
                return {k: torch.from_numpy(np.array(arrays[k])) for k in arrays.files if k in ("x", "y")}
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return {k: v for k, v in load_file(str(path)).items() if k in ("x", "y")}
    except Exception as error:  # corrupt or foreign file
        reason = (str(error).splitlines() or [type(error).__name__])[0]
        raise VitlensError(f"cannot read {path} ({reason}): save x and y with numpy.savez or safetensors") from None
    raise VitlensError(f"tensor file {path} must end in .npz or .safetensors")


def _load_tensors(arg, augment):
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
    y = y.long()
    if int(y.min()) < 0:
        raise VitlensError(f"y in {path} has negative labels: use class indices 0..K-1")
    # float32 is what models take; exact for float32 (and float16) input.
    return ExactTensorDataset(x.float(), y, spec=f"tensors:{path}", num_classes=int(y.max()) + 1)


# ----------------------------------------------------------------------------- public API


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
) -> Dataset:
    """Load the data set named by `spec` (see the module docstring) as `(x, y)` pairs.

    `model` (anything with a timm `pretrained_cfg`) overrides input_size/mean/std. `samples`
    keeps a subset chosen with `seed` (all items when None or larger than the set); `augment`
    is None, "crop_flip" or "randaugment" and draws from a generator seeded with `seed`.
    `root` and `download` only matter for CIFAR. `split` is ignored by `tensors:PATH`.
    """
    name, arg = _parse_spec(spec)
    if split not in SPLITS:
        raise VitlensError(f"split must be 'train' or 'test', got {split!r}")
    augment = _check_augment(augment)
    if name == "tensors":
        return _subset(_load_tensors(arg, augment), samples, seed)
    cfg = data_config(model, input_size, mean, std)
    if name == "digits" and not arg:
        return _load_digits(split, cfg, augment, samples, seed)
    if name == "synthetic":
        return _load_synthetic(arg, split, cfg, augment, samples, seed)
    if name in CIFAR and not arg:
        return _load_cifar(name, split, cfg, augment, samples, seed, root, download)
    if name == "folder":
        return _load_folder(arg, split, cfg, augment, samples, seed)
    raise _unknown_spec(spec)


def _subset(dataset: ExactTensorDataset, samples, seed) -> ExactTensorDataset:
    keep = subset_indices(len(dataset), samples, seed)
    if len(keep) == len(dataset):
        return dataset
    return ExactTensorDataset(dataset.x[keep], dataset.targets[keep], spec=dataset.spec,
                              num_classes=dataset.num_classes, classes=dataset.classes)


def make_loader(dataset: Dataset, batch_size: int = 64, shuffle: bool = False, seed: int = 0,
                drop_last: bool = False) -> DataLoader:
    """A single-process DataLoader; with shuffle=True the order comes from a generator seeded with `seed`."""
    if int(batch_size) < 1:
        raise VitlensError(f"batch size must be at least 1, got {batch_size}")
    generator = torch.Generator().manual_seed(int(seed)) if shuffle else None
    return DataLoader(dataset, batch_size=int(batch_size), shuffle=shuffle, generator=generator,
                      num_workers=0, drop_last=drop_last)


def _beta(alpha: float, generator: torch.Generator | None) -> float:
    """One draw from Beta(alpha, alpha), reproducible from a torch generator."""
    seed = int(torch.randint(0, 2**62, (1,), generator=generator))
    return float(np.random.default_rng(seed).beta(alpha, alpha))


def soft_targets(x: torch.Tensor, y: torch.Tensor, num_classes: int, mixup_alpha: float = 0.0,
                 cutmix_alpha: float = 0.0, label_smoothing: float = 0.0,
                 generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Mix a batch and give soft targets (rows sum to 1), as in the paper's training loss.

    label smoothing: (1 - eps) * one_hot + eps / K (Szegedy et al. 2016).
    mixup: x = lam x + (1 - lam) x[perm], lam ~ Beta(a, a) (Zhang et al. 2018).
    cutmix: paste a box of x[perm] with area ~ (1 - lam); the label weight is the actual
    pasted area after clipping at the border (Yun et al. 2019).
    With both alphas > 0 one of the two is picked per batch with probability 1/2 (as timm).
    All zero: x is returned unchanged and the targets are one-hot.
    """
    if mixup_alpha < 0 or cutmix_alpha < 0 or not 0 <= label_smoothing < 1:
        raise VitlensError("mixup/cutmix alpha must be >= 0 and label smoothing in [0, 1)")
    y = torch.as_tensor(y).long()
    if y.numel() and (int(y.min()) < 0 or int(y.max()) >= num_classes):
        raise VitlensError(f"labels must be in 0..{num_classes - 1} for {num_classes} classes")
    targets = F.one_hot(y, num_classes).float()
    if label_smoothing > 0:
        targets = targets * (1 - label_smoothing) + label_smoothing / num_classes
    if mixup_alpha == 0 and cutmix_alpha == 0:
        return x, targets

    use_cutmix = cutmix_alpha > 0
    if mixup_alpha > 0 and cutmix_alpha > 0:
        use_cutmix = bool(torch.rand(1, generator=generator) < 0.5)
    lam = _beta(cutmix_alpha if use_cutmix else mixup_alpha, generator)
    perm = torch.randperm(len(y), generator=generator)
    if use_cutmix:
        height, width = x.shape[-2:]
        cut = math.sqrt(1.0 - lam)
        cut_h, cut_w = int(height * cut), int(width * cut)
        cy = int(torch.randint(0, height, (1,), generator=generator))
        cx = int(torch.randint(0, width, (1,), generator=generator))
        top, bottom = max(cy - cut_h // 2, 0), min(cy + cut_h // 2, height)
        left, right = max(cx - cut_w // 2, 0), min(cx + cut_w // 2, width)
        mixed = x.clone()
        mixed[..., top:bottom, left:right] = x[perm][..., top:bottom, left:right]
        lam = 1.0 - (bottom - top) * (right - left) / float(height * width)
    else:
        mixed = lam * x + (1.0 - lam) * x[perm]
    return mixed, lam * targets + (1.0 - lam) * targets[perm]


# Data sets named without a path (the dashboard's picker; `folder:`/`tensors:` take one).
DATASET_NAMES = ("digits", "synthetic", *CIFAR)


def list_datasets(root: str | None = None) -> list[dict]:
    """The data sets vitlens knows: name, spec, description, num_classes, sizes, offline availability."""
    root = os.path.abspath(os.path.expanduser(root or default_root()))
    digits = _digits_split()
    synthetic_n = SYNTHETIC_DEFAULTS["n"]
    rows = [
        {"name": "digits", "spec": "digits", "num_classes": 10,
         "description": "embedded default: scikit-learn's 1797 real 8x8 handwritten digits, resized",
         "sizes": {"train": len(digits["train"][1]), "test": len(digits["test"][1])}, "offline": True},
    ]
    for name, info in CIFAR.items():
        rows.append({"name": name, "spec": name, "num_classes": info["num_classes"],
                     "description": f"{info['title']} (torchvision) from {root}",
                     "sizes": {"train": 50000, "test": 10000}, "offline": _cifar_available(name, root)})
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
