"""What an experiment will cost, before it runs: its training steps, timed here on a few steps of each
model, and the (checkpoint, analysis) computations it will add."""
from __future__ import annotations

import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..data import load_data
from ..device import resolve_device
from ..models import load_model
from ..training.trainer import plan
from .declaration import Experiment


@dataclass(frozen=True)
class Estimate:
    steps: int           # optimiser steps over all cells
    seconds: float       # the training's time at the measured step times
    analyses: int        # (checkpoint, analysis) computations
    step_seconds: dict   # model label -> seconds per step, measured here

    def describe(self) -> str:
        rates = ", ".join(f"{k} {v * 1000:.0f} ms" for k, v in self.step_seconds.items())
        return (f"training: {self.steps} optimiser steps, about {self.seconds / 60:.1f} min here ({rates} per step, "
                f"measured); analyses: {self.analyses} (checkpoint, analysis) computations, not timed")


def _step_seconds(model_name: str, args: dict, batch: int, device: torch.device, repeats: int = 2) -> float:
    """Median seconds of one training step (forward, backward, AdamW) at BATCH on random inputs."""
    torch.manual_seed(0)
    model = load_model(model_name, **dict(args, pretrained=False)).to(device).train()
    size = tuple(model.pretrained_cfg.get("input_size", (3, 32, 32)))
    classes = model.pretrained_cfg.get("num_classes") or 10
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    x = torch.randn(batch, *size, device=device)
    y = torch.randint(0, classes, (batch,), device=device)
    times = []
    for _ in range(repeats + 1):  # the first is a warm-up
        start = time.perf_counter()
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return sorted(times[1:])[len(times[1:]) // 2]


def estimate(experiment: Experiment) -> Estimate:
    device = resolve_device(experiment.device)
    clean = load_data(experiment.dataset, split="train")
    labels_per_class = torch.bincount(clean.labels())
    rates: dict = {}
    steps = seconds = 0.0
    for cell in experiment.cells:
        own = int(sum(max(1, int(n * cell.fraction)) for n in labels_per_class.tolist() if n))
        schedule = plan(experiment.budget, experiment.epochs, cell.recipe.batch_size, own, len(clean), experiment.keep)
        key = (cell.model, str(sorted(cell.model_args.items())), cell.recipe.batch_size)
        if key not in rates:
            rates[key] = _step_seconds(cell.model, cell.model_args, cell.recipe.batch_size, device)
        steps += schedule.steps
        seconds += schedule.steps * rates[key]
    labels = {f"{m}{' ' + a if a != '[]' else ''} (batch {b})": v for (m, a, b), v in rates.items()}
    return Estimate(int(steps), seconds, len(experiment.cells) * len(experiment.keep) * len(experiment.analyses), labels)
