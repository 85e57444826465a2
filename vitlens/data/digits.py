"""`digits` (alias `default`): scikit-learn's 1797 real 8x8 handwritten digits, a fixed 80/20 split."""
from __future__ import annotations

import functools

import numpy as np
import torch

from .datasets import ImageTensorDataset, subset_indices

# A fixed seed that does not depend on the user's seed: the split never changes.
DIGITS_SPLIT_SEED = 0


@functools.lru_cache(maxsize=1)
def digits_split() -> dict:
    """load_digits() images in [0, 1] and a fixed stratified 80/20 split (same on every machine)."""
    from sklearn.datasets import load_digits  # deferred: scikit-learn is heavy and only this set needs it

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


def load(split, cfg, augment, samples, seed) -> ImageTensorDataset:
    images, labels = digits_split()[split]
    keep = subset_indices(len(labels), samples, seed)
    return ImageTensorDataset(images[keep], labels[keep], cfg, spec="digits", split=split,
                              classes=[str(d) for d in range(10)], num_classes=10,
                              augment=augment, seed=seed)
