"""`vitlens train`: train a model so the Hessian and landscape analyses can follow training.

A thin face over the resumable trainer (`vitlens.training.trainer`): AdamW with a linear warm-up and a
cosine schedule (Loshchilov & Hutter 2017, 2019), optionally the paper's augmentation and soft targets,
a per-class subsample (as the authors' `ops/datasets.py`), and one `epoch_NNN.safetensors` per epoch
with its metrics, epoch 0 being the initialisation. The folder also holds `resume.safetensors`: the
same command again resumes after the last finished epoch. Everything is seeded: the same call gives
the same weights on the same machine, killed and resumed or not.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import torch
import torch.nn as nn
from torch.utils.data import Subset

from .data import load_data, per_class_indices
from .errors import VitlensError
from .models import read_checkpoint_metadata
from .options import Option
from .training.recipes import Recipe
from .training.trainer import fit, plan

# `vitlens train`'s options, declared once (the CLI's flags, types and ranges come from here).
TRAIN_OPTIONS = [
    Option("epochs", int, 10, "epochs", low=1, high=100000),
    Option("subsample", float, 1.0, "fraction of each class of the train split to use", low=1e-6, high=1.0),
    Option("batch_size", int, 64, "batch size", low=1, high=1 << 16),
    Option("lr", float, 2e-3, "AdamW learning rate", low=1e-12, high=10.0),
    Option("weight_decay", float, 5e-2, "AdamW weight decay", low=0.0, high=100.0),
    Option("seed", int, 0, "seed", low=0, high=2**63 - 1),
    Option("augment", str, None, "training augmentation", nullable=True, choices=("crop_flip", "randaugment")),
    Option("label_smoothing", float, 0.0, "label smoothing", low=0.0, high=1.0),
    Option("mixup", float, 0.0, "mixup alpha (0 = off)", low=0.0, high=100.0),
    Option("cutmix", float, 0.0, "cutmix alpha (0 = off)", low=0.0, high=100.0),
]


def train(model: nn.Module, dataset: str = "digits", epochs: int = 10, batch_size: int = 64,
          lr: float = 2e-3, weight_decay: float = 5e-2, seed: int = 0, subsample: float = 1.0,
          augment: str | None = None, label_smoothing: float = 0.0, mixup: float = 0.0,
          cutmix: float = 0.0, out_dir: str | Path | None = None, device: str | torch.device = "cpu",
          log: Callable[[str], None] = print, warmup_epochs: float = 1.0) -> list[dict]:
    """Train MODEL on DATASET; keep `epoch_NNN.safetensors` for every epoch in OUT_DIR (resumable).
    Returns the history (one row per epoch, epoch 0 = the initialisation)."""
    if epochs < 1:
        raise VitlensError(f"epochs must be at least 1, got {epochs}")
    if not 0 < subsample <= 1:
        raise VitlensError(f"--subsample is a fraction in (0, 1], got {subsample}")
    if out_dir is None:
        raise VitlensError("vitlens train needs --out FOLDER (its checkpoints and resumable state)")
    recipe = Recipe("cli", lr=lr, weight_decay=weight_decay, batch_size=batch_size, warmup_epochs=warmup_epochs,
                    augment=augment, label_smoothing=label_smoothing, mixup=mixup, cutmix=cutmix, clip=None,
                    drop_path=0.0).check()
    device = torch.device(device)
    train_set = load_data(dataset, split="train", model=model, seed=seed, augment=augment)
    clean = load_data(dataset, split="train", model=model, seed=seed)
    test = load_data(dataset, split="test", model=model, seed=seed)
    indices = per_class_indices(clean.labels(), subsample, seed)
    schedule = plan("epochs", epochs, batch_size, len(indices), len(clean), range(epochs + 1))
    num_classes = getattr(clean, "num_classes", None) or model.pretrained_cfg.get("num_classes")

    def report(epoch: int, path: Path) -> None:
        row = read_checkpoint_metadata(path)
        if epoch and "test_accuracy" in row:
            log(f"epoch {epoch}/{epochs}  loss {row['train_loss']:.4f}  train acc {row['train_accuracy']:.4f}  "
                f"test acc {row['test_accuracy']:.4f}  test nll {row['test_nll']:.4f}  {row['seconds']:.1f}s")

    meta = dict(getattr(model, "vitlens_spec", {}) or {}, dataset=dataset, subsample=subsample, epochs=epochs,
                batch_size=batch_size, lr=lr, weight_decay=weight_decay, augment=augment,
                label_smoothing=label_smoothing, mixup=mixup, cutmix=cutmix)
    return fit(model, train_set, indices, Subset(clean, indices), test, recipe, schedule, Path(out_dir),
               seed=seed, num_classes=num_classes, device=device, on_checkpoint=report, meta=meta)

