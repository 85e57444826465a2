"""One cell of an experiment: train the request's model by a recipe on a per-class fraction of the
training split, and analyse every kept checkpoint as soon as it exists.

The cell's folder (under `$VITLENS_EXPERIMENT_ROOT`) is named by everything that decides its training
(model, data, fraction, recipe, budget, epochs, kept epochs, seed), never by a path a user gives. It
holds the resumable state (`vitlens.training.trainer`), the kept checkpoints and the chosen indices,
so a killed cell resumes where it stopped: finished epochs are not trained again and finished
analyses come from the cache (each (checkpoint, analysis) is a sub-request of its own, cached alone).
The Result has one row per kept epoch: the training metrics and every summary number of the analyses.
"""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import math
import re
from pathlib import Path

import pandas as pd
import torch
from torch.utils.data import Subset

from ..context import Context
from ..data import SPLITS, load_data, per_class_indices
from ..declarations import get_analysis
from ..errors import VitlensError
from ..models.checkpoints import select_epochs
from ..options import Option
from ..request import JobSpec
from ..result import Result
from ..store.keys import data_files
from ..store.paths import experiment_root
from ..training.recipes import DEVIATIONS, recipe
from ..training.trainer import fit, plan
from . import Figure, Memory, register_analysis

REQUEST_KEYS = ("split", "samples", "batch_size")  # per analysis, besides its own options
NOT_PER_CHECKPOINT = ("experiment_cell", "findings")  # analyses of several requests


def _check_keep(value) -> None:
    if isinstance(value, list) and any(isinstance(e, bool) or not isinstance(e, int) or e < 0 for e in value):
        raise VitlensError(f"--keep: epochs are whole numbers from 0, got {value}")


def check_analyses(value: dict) -> None:
    """Every named analysis exists and takes these options (its own declaration checks them)."""
    for name, options in value.items():
        analysis = get_analysis(name)
        if name in NOT_PER_CHECKPOINT:
            raise VitlensError(f"{name} cannot be run on each checkpoint")
        if not isinstance(options, dict):
            raise VitlensError(f"the options of {name} must be a mapping, got {options!r}")
        own = {k: v for k, v in options.items() if k not in REQUEST_KEYS}
        analysis.parse(own)
        split = options.get("split", "test")
        if split not in SPLITS:
            raise VitlensError(f"{name}.split must be train or test, got {split!r}")
        for key in ("samples", "batch_size"):
            value_ = options.get(key)
            if value_ is not None and (isinstance(value_, bool) or not isinstance(value_, int)
                                       or not 1 <= value_ <= 1_000_000):
                raise VitlensError(f"{name}.{key} must be a whole number from 1 to 1000000, got {value_!r}")


OPTIONS = [
    Option("fraction", float, 1.0, "share of each class of the training split (per class, as the authors)",
           low=1e-6, high=1.0),
    Option("recipe", dict, {}, "training recipe: {\"recipe\": \"paper\"|\"noaug\", setting: value, ...} (empty: "
           "paper)", check=lambda v: recipe(v)),
    Option("budget", str, "epochs", "an epoch is a pass over the cell's own data (epochs) or over the whole "
           "training split (steps: equal optimiser steps for every fraction)", choices=("epochs", "steps")),
    Option("epochs", int, 10, "epochs to train", low=1, high=100000),
    Option("keep", str, "all", "epochs whose checkpoints are kept and analysed: all, every:N or a list such as "
           "[0, 1, 3] (0 = the initialisation)", list_of=int, high=10000, pattern=r"all|every:[1-9][0-9]{0,5}",
           check=_check_keep),
    Option("analyses", dict, {}, "analyses of each kept checkpoint: {name: {option: value, split, samples, "
           "batch_size}} (split: train for hessian, else test)", check=check_analyses),
]


def cell_name(spec: JobSpec, params: dict) -> str:
    """The cell's folder name: readable, plus a digest of everything that decides its training."""
    decided = dict(model=spec.model, model_args=spec.model_args, dataset=spec.dataset,
                   data_files=data_files(spec.dataset), seed=spec.seed, fraction=params["fraction"],
                   recipe=json.loads(recipe(params["recipe"]).to_json()), budget=params["budget"],
                   epochs=params["epochs"], keep=select_epochs(params["keep"], params["epochs"]))
    digest = hashlib.sha256(json.dumps(decided, sort_keys=True, default=str).encode()).hexdigest()[:16]
    readable = re.sub(r"[^A-Za-z0-9._-]+", "-", spec.model)[:40]
    return f"{readable}_f{params['fraction']:g}_s{spec.seed}_{digest}"


@contextlib.contextmanager
def locked(folder: Path):
    """One process trains a folder at a time (a second identical cell waits, then finds it done)."""
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / ".lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def sub_spec(spec: JobSpec, name: str, options: dict, checkpoint: Path) -> JobSpec:
    """The request of analysis NAME on one kept checkpoint of the cell SPEC."""
    own = {k: v for k, v in options.items() if k not in REQUEST_KEYS}
    return JobSpec(analysis=name, model=spec.model, model_args=dict(spec.model_args), checkpoint=str(checkpoint),
                   dataset=spec.dataset, split=options.get("split", "train" if name == "hessian" else "test"),
                   samples=options.get("samples"), batch_size=options.get("batch_size", spec.batch_size),
                   seed=spec.seed, device=spec.device, params=own)


def summary_numbers(result: Result) -> dict:
    """The scalar numbers of a Result's summary."""
    summary = result.meta.get("summary") or {}
    return {k: float(v) for k, v in summary.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool)}


def columns(history_columns, summaries: dict) -> dict:
    """(analysis, key) -> column: the key itself where no other column has it, else analysis_key."""
    seen: dict = {}
    for name, keys in summaries.items():
        for key in keys:
            seen.setdefault(key, []).append(name)
    return {(name, key): key if len(seen[key]) == 1 and key not in history_columns else f"{name}_{key}"
            for name, keys in summaries.items() for key in keys}


def _memory_batch(params, batch_size: int) -> int:
    return max(batch_size, recipe(params["recipe"]).batch_size)


@register_analysis("experiment_cell", "one cell of an experiment: train by a recipe on a per-class fraction "
                   "(resumable), then analyse each kept checkpoint (`vitlens experiment`)", OPTIONS,
                   conventions="the authors' protocol (configs/cifar100_vit.yaml); deviations: "
                               + "; ".join(DEVIATIONS),
                   figures=[Figure("training_curves")],
                   memory=Memory(weights=4, graph=1.0, working=3, batch=_memory_batch), over_checkpoints=False)
def experiment_cell(ctx: Context, params: dict) -> Result:
    spec, rec = ctx.spec, recipe(params["recipe"])
    epochs = params["epochs"]
    keep = select_epochs(params["keep"], epochs)
    analyses = params["analyses"]
    folder = experiment_root() / cell_name(spec, params)
    model = ctx.model  # built by the engine with torch seeded by the request's seed: the same initialisation
    train_set = load_data(spec.dataset, split="train", seed=spec.seed, model=model, augment=rec.augment)
    clean = load_data(spec.dataset, split="train", seed=spec.seed, model=model)
    test = load_data(spec.dataset, split="test", seed=spec.seed, model=model)
    indices = per_class_indices(clean.labels(), params["fraction"], spec.seed)
    schedule = plan(params["budget"], epochs, rec.batch_size, len(indices), len(clean), keep)
    num_classes = getattr(clean, "num_classes", None) or model.pretrained_cfg.get("num_classes")
    progress = ctx.progress(epochs + len(keep) * len(analyses), "train and analyse")
    results: dict[int, dict[str, Result]] = {}

    def analyse(epoch: int, path: Path) -> None:
        results[epoch] = {}
        for name, options in analyses.items():
            results[epoch][name] = ctx.run(sub_spec(spec, name, options, path))
            progress.update(1, f"epoch {epoch}: {name}")

    with locked(folder):
        indices_file = folder / "indices.json"
        if not indices_file.exists():
            indices_file.write_text(json.dumps({"fraction": params["fraction"], "seed": spec.seed, "indices": indices}))
        history = fit(model, train_set, indices, Subset(clean, indices), test, rec, schedule, folder,
                      seed=spec.seed, num_classes=num_classes, device=ctx.device,
                      progress=lambda epoch, message: progress.update(1, message), on_checkpoint=analyse,
                      meta=dict(model=spec.model, model_args=spec.model_args, dataset=spec.dataset,
                                fraction=params["fraction"], budget=params["budget"], epochs=epochs))
    summaries = {name: sorted({k for e in results for k in summary_numbers(results[e][name])}) for name in analyses}
    names = columns(set(history[0]) if history else set(), summaries)
    rows = []
    for record in history:
        row = dict(record, fraction=params["fraction"])
        for name in analyses:
            numbers = summary_numbers(results[record["epoch"]][name]) if record["epoch"] in results else {}
            for key in summaries[name]:
                row[names[(name, key)]] = numbers.get(key, math.nan)
        rows.append(row)
    per_class = torch.bincount(clean.labels()[torch.as_tensor(indices)]).tolist()
    last = rows[-1] if rows else {}
    meta = {"analysis": "experiment_cell",
            "summary": {k: v for k, v in last.items() if isinstance(v, (int, float))},
            "cell": dict(folder=folder.name, samples=len(indices), per_class=per_class, unit=schedule.unit,
                         steps=schedule.steps, recipe=json.loads(rec.to_json()), deviations=list(DEVIATIONS)),
            "sub_results": {str(e): {n: (r.meta.get("key") or "") for n, r in found.items()}
                            for e, found in results.items()}}
    return Result(pd.DataFrame(rows), meta)
