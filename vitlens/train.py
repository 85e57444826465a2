"""A small trainer so Hessian and landscape analyses can follow training.

`train(...)` fits a model with AdamW and a cosine learning-rate schedule (Loshchilov & Hutter 2017,
2019), optionally with the paper's augmentation (random crop + flip, RandAugment) and soft targets
(label smoothing, mixup, cutmix), and saves one checkpoint per epoch as .safetensors with its
metadata (model spec, data set, epoch, losses, accuracies, seed, time), so the files load back
without pickle. Everything is seeded: the same call gives the same weights on the same machine.
"""
from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

from .analyses.evaluate import Scores
from .data import load_data, make_loader, soft_targets
from .errors import VitlensError
from .models import save_checkpoint
from .options import Option


@torch.no_grad()
def accuracy_and_nll(model: nn.Module, loader, device) -> tuple[float, float]:
    model.eval()
    scores = Scores()
    for x, y in loader:
        scores.add(model(x.to(device)), torch.as_tensor(y).to(device))
    return scores.accuracy, scores.nll


# `vitlens train`'s options, declared once (the CLI's flags, types and ranges come from here).
TRAIN_OPTIONS = [
    Option("epochs", int, 10, "epochs", low=1, high=100000),
    Option("subsample", float, 1.0, "fraction of the train split to use", low=1e-6, high=1.0),
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
    """Train MODEL on DATASET; save `epoch_NNN.safetensors` per epoch in OUT_DIR. Returns the history."""
    if epochs < 1:
        raise VitlensError(f"epochs must be at least 1, got {epochs}")
    if not 0 < subsample <= 1:
        raise VitlensError(f"--subsample is a fraction in (0, 1], got {subsample}")
    torch.manual_seed(seed)
    device = torch.device(device)
    full = load_data(dataset, split="train", model=model, seed=seed)
    samples = max(1, round(len(full) * subsample)) if subsample < 1 else None
    train_set = load_data(dataset, split="train", model=model, seed=seed, samples=samples, augment=augment)
    test_set = load_data(dataset, split="test", model=model, seed=seed)
    num_classes = getattr(train_set, "num_classes", None) or model.pretrained_cfg.get("num_classes")
    train_loader = make_loader(train_set, batch_size, shuffle=True, seed=seed, drop_last=len(train_set) > batch_size)
    test_loader = make_loader(test_set, 256)
    clean_train_loader = make_loader(load_data(dataset, split="train", model=model, seed=seed, samples=samples), 256)
    model.to(device)
    decay = [p for p in model.parameters() if p.ndim > 1]
    no_decay = [p for p in model.parameters() if p.ndim <= 1]  # biases and norm parameters
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=lr)
    steps = epochs * len(train_loader)
    warmup = int(warmup_epochs * len(train_loader))

    def lr_at(step: int) -> float:
        if step < warmup:
            return lr * (step + 1) / warmup
        return 0.5 * lr * (1 + math.cos(math.pi * (step - warmup) / max(1, steps - warmup)))

    generator = torch.Generator().manual_seed(seed)
    out_dir = Path(out_dir) if out_dir else None
    history, step, start = [], 0, time.perf_counter()
    for epoch in range(1, epochs + 1):
        model.train()
        total_loss, total_n = 0.0, 0
        for x, y in train_loader:
            x, y = x.to(device), torch.as_tensor(y).to(device)
            for group in opt.param_groups:
                group["lr"] = lr_at(step)
            if mixup or cutmix or label_smoothing:
                x, target = soft_targets(x, y, num_classes, mixup, cutmix, label_smoothing, generator)
                loss = torch.sum(-target.to(device) * F.log_softmax(model(x), dim=1), dim=1).mean()
            else:
                loss = F.cross_entropy(model(x), y)
            if not torch.isfinite(loss):
                raise VitlensError(f"training loss became {loss.item()} at epoch {epoch}; lower --lr")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
            total_loss += loss.item() * len(y)
            total_n += len(y)
        train_acc, train_nll = accuracy_and_nll(model, clean_train_loader, device)
        test_acc, test_nll = accuracy_and_nll(model, test_loader, device)
        record = dict(epoch=epoch, loss=total_loss / total_n, train_accuracy=train_acc, train_nll=train_nll,
                      test_accuracy=test_acc, test_nll=test_nll, seconds=round(time.perf_counter() - start, 1))
        history.append(record)
        log(f"epoch {epoch}/{epochs}  loss {record['loss']:.4f}  train acc {train_acc:.4f}  "
            f"test acc {test_acc:.4f}  test nll {test_nll:.4f}  {record['seconds']:.1f}s")
        if out_dir is not None:
            meta = dict(record, dataset=dataset, seed=seed, subsample=subsample, augment=augment,
                        label_smoothing=label_smoothing, mixup=mixup, cutmix=cutmix, lr=lr,
                        weight_decay=weight_decay, batch_size=batch_size, epochs=epochs)
            save_checkpoint(model, out_dir / f"epoch_{epoch:03d}.safetensors", meta)
    model.eval()
    return history
