"""The Dataset classes every source returns, and seeded subsets."""
from __future__ import annotations

import math

import torch
from torch.utils.data import Dataset

from ..errors import VitlensError
from .transforms import normalise, resize_images, seeded_apply, tensor_augment

SPLITS = ("train", "test")

# Precompute the whole transformed tensor when it is at most this big, else transform per item.
PRECOMPUTE_BYTES = 256 * 2**20


def per_class_indices(labels, fraction: float, seed: int = 0) -> list[int]:
    """Sorted indices of a per-class subsample: from each class, int(fraction * its size) items
    (at least one) chosen at random with SEED, as the authors' `ops/datasets.py subsample` (random=True)
    keeps each class' share of the data."""
    if not 0 < fraction <= 1:
        raise VitlensError(f"a data fraction must be in (0, 1], got {fraction}")
    labels = torch.as_tensor(labels).long()
    if fraction == 1:
        return list(range(len(labels)))
    generator = torch.Generator().manual_seed(int(seed))
    kept = []
    for cls in torch.unique(labels, sorted=True):
        members = torch.nonzero(labels == cls).flatten()
        size = max(1, int(len(members) * fraction))
        kept += members[torch.randperm(len(members), generator=generator)[:size]].tolist()
    return sorted(kept)


def subset_indices(n: int, samples: int | None, seed: int = 0) -> torch.Tensor:
    """Sorted indices of a random subset of `samples` out of `n` items (all when None or >= n)."""
    if samples is None or samples >= n:
        return torch.arange(n)
    if samples < 1:
        raise VitlensError(f"samples must be a positive number, got {samples}")
    generator = torch.Generator().manual_seed(int(seed))
    return torch.randperm(n, generator=generator)[:samples].sort().values


class ImageTensorDataset(Dataset):
    """In-memory images in [0, 1] at their native size, resized and normalised for the model.

    Used for `digits` and `synthetic`. Without augmentation the transformed tensor is
    precomputed (`.x`) when it fits in PRECOMPUTE_BYTES.
    """

    def __init__(self, images, targets, cfg, *, spec, split, classes, num_classes, augment=None, seed=0):
        self.images, self.targets = images, targets.long()
        self.data_config, self.spec, self.split = cfg, spec, split
        self.classes, self.num_classes, self.augment = classes, num_classes, augment
        self._augment = None if augment is None else tensor_augment(augment, cfg)
        self._generator = torch.Generator().manual_seed(int(seed))
        size = len(images) * math.prod(cfg["input_size"]) * 4
        self.x = None
        if augment is None and size <= PRECOMPUTE_BYTES:
            self.x = self._transform(images)

    def _transform(self, images):
        return normalise(resize_images(images, self.data_config), self.data_config)

    def reseed(self, seed: int) -> None:
        """Restart the augmentation's random draws from SEED (a resumed training run draws what an
        uninterrupted one would)."""
        self._generator.manual_seed(int(seed))

    def labels(self) -> torch.Tensor:
        return self.targets

    def __len__(self):
        return len(self.targets)

    def __getitem__(self, i):
        if self.x is not None:
            return self.x[i], self.targets[i]
        if self._augment is None:
            return self._transform(self.images[i : i + 1])[0], self.targets[i]
        image = resize_images(self.images[i : i + 1], self.data_config)[0]
        image = seeded_apply(self._augment, image, self._generator)
        return normalise(image, self.data_config), self.targets[i]


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

    def reseed(self, seed: int) -> None:
        """Nothing to reseed: the data is used exactly as given."""

    def labels(self) -> torch.Tensor:
        return torch.as_tensor(self.targets)


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

    def reseed(self, seed: int) -> None:
        """As `ImageTensorDataset.reseed`."""
        self._generator.manual_seed(int(seed))

    def labels(self) -> torch.Tensor:
        targets = getattr(self.base, "targets", None)
        if targets is None:
            return torch.tensor([int(self.base[i][1]) for i in self.indices])
        return torch.as_tensor(targets)[torch.as_tensor(self.indices, dtype=torch.long)]

    def __getitem__(self, i):
        image, label = self.base[self.indices[i]]
        if self.augment is None:
            return self.transform(image), int(label)
        return seeded_apply(self.transform, image, self._generator), int(label)
