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

Modules: `spec` (parsing, `load_data`, `make_loader`, `list_datasets`), `transforms` (the
model's input config, resizing, normalisation, augmentation), `datasets` (the Dataset classes,
subsets), one module per source (`digits`, `synthetic`, `cifar`, `folder`, `tensors`) and
`mixing` (soft targets: label smoothing, mixup, cutmix).
"""
from .cifar import CIFAR, default_root
from .datasets import (SPLITS, ExactTensorDataset, ImageTensorDataset, TransformedDataset, per_class_indices,
                       subset_indices)
from .mixing import soft_targets
from .spec import ALIASES, DATASET_NAMES, KNOWN_SPECS, list_datasets, load_data, make_loader
from .synthetic import synthetic_images
from .transforms import AUGMENTS, data_config

__all__ = ["CIFAR", "default_root", "SPLITS", "ExactTensorDataset", "ImageTensorDataset", "TransformedDataset",
           "per_class_indices", "subset_indices", "soft_targets", "ALIASES", "DATASET_NAMES", "KNOWN_SPECS", "list_datasets",
           "load_data", "make_loader", "synthetic_images", "AUGMENTS", "data_config"]
