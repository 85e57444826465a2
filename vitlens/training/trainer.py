"""A resumable trainer: the same weights whether a run went through or was killed and resumed.

Every random draw of optimiser step s (which images, their augmentation, mixup/cutmix, dropout and
stochastic depth) is seeded from (seed, s), and the learning rate is a function of s, so a run that
resumes from its last state (weights, AdamW's moments, the step) takes exactly the steps an
uninterrupted run takes. The state is saved after every epoch (`resume.safetensors`, written whole
then renamed); the weights of the epochs to keep are saved as `epoch_NNN.safetensors` (epoch 0: the
initialisation), with their metrics (train NLL and accuracy on the clean training subset, test
accuracy, NLL and ECE with the authors' 10 bins) in the file's metadata and in the history.

An "epoch" is `Plan.unit` optimiser steps: a pass over the run's own data (budget "epochs"), or a
pass over the full training set (budget "steps": equal steps for every data fraction, so that small
data sets are not left with a handful of updates).
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from ..data import make_loader, soft_targets
from ..errors import VitlensError
from ..metrics import calibration_bins, expected_calibration_error, predict
from ..models import save_checkpoint
from ..progress import checkpoint as stop_point
from .recipes import Recipe

RESUME = "resume.safetensors"
ECE_BINS = 10  # the authors' ops/tests.py


def mix(*numbers: int) -> int:
    """A 63-bit seed from integers (sha256: independent streams for (seed, step), (seed, pass))."""
    digest = hashlib.sha256(",".join(str(int(n)) for n in numbers).encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def checkpoint_name(epoch: int) -> str:
    return f"epoch_{epoch:03d}.safetensors"


@dataclass(frozen=True)
class Plan:
    """How long a run trains and which epochs it keeps: UNIT optimiser steps make an epoch."""

    unit: int
    epochs: int
    keep: tuple[int, ...]

    @property
    def steps(self) -> int:
        return self.unit * self.epochs


def plan(budget: str, epochs: int, batch_size: int, own_size: int, full_size: int, keep) -> Plan:
    """BUDGET "epochs": an epoch is a pass over the run's OWN_SIZE items; "steps": over FULL_SIZE
    (equal optimiser steps for every fraction). A last partial batch is dropped (as the loaders do)."""
    if budget not in ("epochs", "steps"):
        raise VitlensError(f"train.budget must be 'epochs' or 'steps', got {budget!r}")
    size = own_size if budget == "epochs" else full_size
    unit = max(1, size // batch_size)
    keep = tuple(sorted({int(e) for e in keep if 0 <= int(e) <= epochs}))
    return Plan(unit, int(epochs), keep)


class BatchStream:
    """The indices of the batch of step s: pass p = s // per_pass over a permutation seeded by
    (seed, p); known without drawing the batches before it (a resumed run jumps straight in)."""

    def __init__(self, indices: list[int], batch_size: int, seed: int):
        self.indices = torch.as_tensor(indices, dtype=torch.long)
        self.batch_size = min(batch_size, len(indices))
        self.per_pass = max(1, len(indices) // self.batch_size)
        self.seed = seed
        self._pass, self._order = -1, None

    def batch(self, step: int) -> list[int]:
        number, position = divmod(step, self.per_pass)
        if number != self._pass:
            generator = torch.Generator().manual_seed(mix(self.seed, 1, number))
            self._pass, self._order = number, self.indices[torch.randperm(len(self.indices), generator=generator)]
        return self._order[position * self.batch_size:(position + 1) * self.batch_size].tolist()


def learning_rate(recipe: Recipe, plan_: Plan, step: int) -> float:
    """Linear warm-up over `warmup_epochs`, then cosine to 0 at the last step (Loshchilov & Hutter 2017)."""
    warmup = int(recipe.warmup_epochs * plan_.unit)
    if step < warmup:
        return recipe.lr * (step + 1) / warmup
    return 0.5 * recipe.lr * (1 + math.cos(math.pi * (step - warmup) / max(1, plan_.steps - warmup)))


def optimizer(model: nn.Module, recipe: Recipe) -> torch.optim.AdamW:
    decay = [p for p in model.parameters() if p.ndim > 1]
    no_decay = [p for p in model.parameters() if p.ndim <= 1]  # biases and normalisation parameters
    return torch.optim.AdamW([{"params": decay, "weight_decay": recipe.weight_decay},
                              {"params": no_decay, "weight_decay": 0.0}], lr=recipe.lr)


# ----------------------------------------------------------------------------- state on disk

def save_state(path: Path, model: nn.Module, opt: torch.optim.Optimizer, meta: dict) -> None:
    """Weights, AdamW's state and META (step, epoch, history) in one safetensors file, written whole."""
    tensors = {f"model.{k}": v.detach().cpu().contiguous().clone() for k, v in model.state_dict().items()}
    state = opt.state_dict()
    for index, values in state["state"].items():
        for name, value in values.items():
            tensors[f"optim.{index}.{name}"] = torch.as_tensor(value).detach().cpu().contiguous().clone()
    meta = dict(meta, param_groups=[{k: v for k, v in g.items() if k != "params"} for g in state["param_groups"]])
    tmp = path.with_name(path.name + ".tmp")
    save_file(tensors, str(tmp), metadata={"vitlens": json.dumps(meta, sort_keys=True, default=str)})
    os.replace(tmp, path)


def load_state(path: Path, model: nn.Module, opt: torch.optim.Optimizer) -> dict:
    """Restore what `save_state` wrote; returns its META."""
    from safetensors import safe_open  # the header's metadata

    with safe_open(str(path), framework="pt") as handle:
        meta = json.loads((handle.metadata() or {}).get("vitlens", "{}"))
    tensors = load_file(str(path))
    model.load_state_dict({k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")})
    state: dict = {}
    for key, value in tensors.items():
        if key.startswith("optim."):
            _, index, name = key.split(".", 2)
            state.setdefault(int(index), {})[name] = value
    groups = opt.state_dict()["param_groups"]
    for group, saved in zip(groups, meta.get("param_groups", [])):
        group.update(saved)
    opt.load_state_dict({"state": state, "param_groups": groups})
    return meta


# ----------------------------------------------------------------------------- the loop

@torch.no_grad()
def scores(model: nn.Module, dataset, device, batch_size: int = 256) -> dict:
    """accuracy, nll and ece (10 bins) of MODEL over DATASET."""
    model.eval()
    logits, labels = predict(model, make_loader(dataset, batch_size), device)
    probs = logits.softmax(dim=1)
    return dict(accuracy=float((probs.argmax(1) == labels).float().mean()),
                nll=float(F.cross_entropy(logits, labels)),
                ece=expected_calibration_error(calibration_bins(probs, labels, ECE_BINS)))


def fit(model: nn.Module, train_set, indices: list[int], clean_train, test_set, recipe: Recipe, plan_: Plan,
        folder: Path, *, seed: int, num_classes: int, device: torch.device,
        progress: Callable[[int, str], None] | None = None,
        on_checkpoint: Callable[[int, Path], None] | None = None, meta: dict | None = None) -> list[dict]:
    """Train MODEL (initialised by the caller) on TRAIN_SET's INDICES by RECIPE for PLAN_, keeping
    its state in FOLDER and resuming from it. CLEAN_TRAIN is the same subset without augmentation
    (the train NLL), TEST_SET the test split. ON_CHECKPOINT(epoch, path) is called for every kept
    epoch as soon as its file exists (also for those kept before a resume). Returns the history:
    one row per kept epoch."""
    folder.mkdir(parents=True, exist_ok=True)
    model.to(device)
    opt = optimizer(model, recipe)
    stream = BatchStream(indices, recipe.batch_size, seed)
    history: list[dict] = []
    step, started = 0, time.perf_counter()
    resume = folder / RESUME
    if resume.exists():
        saved = load_state(resume, model, opt)
        step, history = int(saved["step"]), list(saved.get("history", []))
        if step > plan_.steps or step % plan_.unit:
            raise VitlensError(f"{resume} holds step {step}, which is not an epoch of this plan; delete the folder")
    meta = dict(meta or {}, recipe=json.loads(recipe.to_json()), seed=seed, unit=plan_.unit, samples=len(indices))

    def keep(epoch: int) -> None:
        """Scores, resume state, then the epoch's weights (a kill between the two redoes nothing)."""
        path = folder / checkpoint_name(epoch)
        if epoch in plan_.keep and not any(r["epoch"] == epoch for r in history):
            train_scores = scores(model, clean_train, device)
            test_scores = scores(model, test_set, device)
            history.append(dict(epoch=epoch, step=step, train_loss=running.get("loss"),
                                train_nll=train_scores["nll"], train_accuracy=train_scores["accuracy"],
                                test_nll=test_scores["nll"], test_accuracy=test_scores["accuracy"],
                                test_error=1.0 - test_scores["accuracy"], ece=test_scores["ece"],
                                seconds=round(time.perf_counter() - started, 3)))
        save_state(resume, model, opt, dict(meta, step=step, epoch=epoch, history=history))
        if epoch in plan_.keep:
            if not path.exists():
                row = next(r for r in history if r["epoch"] == epoch)
                save_checkpoint(model, path, dict(meta, **row))
            if on_checkpoint is not None:
                on_checkpoint(epoch, path)

    running: dict = {}
    done = step // plan_.unit
    for epoch in plan_.keep:  # kept before a resume: analysed now (cached analyses return at once)
        if epoch < done and on_checkpoint is not None and (folder / checkpoint_name(epoch)).exists():
            on_checkpoint(epoch, folder / checkpoint_name(epoch))
    if step == 0 or done in plan_.keep:
        keep(done)  # the initialisation (epoch 0), or a resumed run's last epoch
    for epoch in range(done + 1, plan_.epochs + 1):
        model.train()
        total, count = 0.0, 0
        for step in range(step, epoch * plan_.unit):
            stop_point()  # the worker's stop and cancel check
            item_seed = mix(seed, 2, step)
            torch.manual_seed(item_seed)  # dropout, stochastic depth, torchvision's draws
            if hasattr(train_set, "reseed"):
                train_set.reseed(item_seed)
            batch = [train_set[i] for i in stream.batch(step)]
            x = torch.stack([b[0] for b in batch]).to(device)
            y = torch.as_tensor([int(b[1]) for b in batch]).to(device)
            for group in opt.param_groups:
                group["lr"] = learning_rate(recipe, plan_, step)
            if recipe.mixup or recipe.cutmix or recipe.label_smoothing:
                generator = torch.Generator().manual_seed(mix(seed, 3, step))
                x, target = soft_targets(x.cpu(), y.cpu(), num_classes, recipe.mixup, recipe.cutmix,
                                         recipe.label_smoothing, generator)
                x, target = x.to(device), target.to(device)
                loss = torch.sum(-target * F.log_softmax(model(x), dim=1), dim=1).mean()
            else:
                loss = F.cross_entropy(model(x), y)
            if not torch.isfinite(loss):
                raise VitlensError(f"the training loss became {loss.item()} at step {step}; lower train.lr")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if recipe.clip:
                torch.nn.utils.clip_grad_norm_(model.parameters(), recipe.clip)
            opt.step()
            total, count = total + loss.item() * len(y), count + len(y)
        step = epoch * plan_.unit
        running = {"loss": total / max(count, 1)}
        if progress is not None:
            progress(epoch, f"epoch {epoch}/{plan_.epochs}")
        keep(epoch)
    model.eval()
    return sorted(history, key=lambda r: r["epoch"])
