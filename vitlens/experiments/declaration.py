"""An experiment, declared once: the axes of a grid of training runs and what to measure on each.

    name: data-size-tiny
    dataset: digits
    models: [demo_vit, demo_resnet]          # or {name: vit_ti_cifar, args: {global_pool: avg}}
    fractions: [0.1, 1.0]                    # per class (the authors' subsample)
    seeds: [0]
    recipes: [noaug]                         # optional axis of recipes (default: train.recipe)
    train: {recipe: noaug, budget: steps, epochs: 3, batch_size: 32}   # + any recipe setting
    analyse:
      epochs: [0, 1, 3]                      # or all, or every:N (0 = the initialisation)
      hessian: {what: spectrum, minibatch: 16, minibatches: 2}
      evaluate: {}

Each cell (model x fraction x recipe x seed) is one `experiment_cell` request: the engine's cache,
the job queue, its workers and its limits treat it as any other request, so the same declaration
gives the same job keys. Every value is checked before anything runs, with one line for the first
bad one (the analyses' own declarations check their options).
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from ..analyses.experiment_cell import check_analyses
from ..declarations import get_analysis
from ..errors import VitlensError
from ..jobs.limits import env_number
from ..models.checkpoints import select_epochs
from ..models.sizing import size_model
from ..models.registry import check_model_args
from ..request import JobSpec, parse_request
from ..training.recipes import FIELDS as RECIPE_FIELDS, Recipe, recipe

KEYS = ("name", "description", "dataset", "models", "fractions", "seeds", "recipes", "train", "analyse", "device",
        "batch_size", "reproduces")
TRAIN_KEYS = ("recipe", "budget", "epochs", *RECIPE_FIELDS)
PRESETS = Path(__file__).resolve().parent / "presets"
MAX_CELLS = 256  # a shared server caps lower: VITLENS_MAX_CELLS


@dataclass(frozen=True)
class Cell:
    """One training run of the grid."""

    model: str
    model_args: dict
    fraction: float
    recipe: Recipe
    seed: int
    notes: tuple[str, ...] = ()

    @property
    def label(self) -> str:
        args = f" {json.dumps(self.model_args, sort_keys=True)}" if self.model_args else ""
        return f"{self.model}{args} · {self.fraction:g} · {self.recipe.name} · seed {self.seed}"


@dataclass(frozen=True)
class Experiment:
    name: str
    dataset: str
    cells: tuple[Cell, ...]
    budget: str
    epochs: int
    keep: tuple[int, ...]
    analyses: dict
    device: str = "auto"
    batch_size: int = 256  # evaluation passes
    description: str = ""
    reproduces: str = ""
    source: dict = field(default_factory=dict, compare=False)

    def spec(self, cell: Cell) -> JobSpec:
        """CELL's request (an `experiment_cell` job)."""
        args = dict(cell.model_args, pretrained=False)
        if cell.recipe.drop_path and "drop_path_rate" not in args and not cell.notes:
            args["drop_path_rate"] = cell.recipe.drop_path
        params = dict(fraction=cell.fraction, recipe=json.loads(cell.recipe.to_json()), budget=self.budget,
                      epochs=self.epochs, keep=list(self.keep), analyses=self.analyses)
        return JobSpec(analysis="experiment_cell", model=cell.model, model_args=args, dataset=self.dataset,
                       split="train", samples=None, batch_size=self.batch_size, seed=cell.seed, device=self.device,
                       params=params)

    def specs(self) -> list[JobSpec]:
        return [self.spec(c) for c in self.cells]

    @property
    def jobs(self) -> int:
        """Training runs plus (checkpoint, analysis) computations."""
        return len(self.cells) * (1 + len(self.keep) * len(self.analyses))


def _list(value, what: str) -> list:
    if value is None:
        return []
    return list(value) if isinstance(value, (list, tuple)) else [value]


def _model(entry) -> tuple[str, dict]:
    if isinstance(entry, str):
        return entry, {}
    if isinstance(entry, dict) and set(entry) <= {"name", "args"} and isinstance(entry.get("name"), str):
        return entry["name"], dict(entry.get("args") or {})
    raise VitlensError(f"a model is a name or {{name: NAME, args: {{...}}}}, got {entry!r}")


def _drop_path_note(model: str, args: dict, rate: float) -> tuple[str, ...]:
    """Stochastic depth goes in as the model's drop_path_rate; a model without one says so."""
    if not rate or "drop_path_rate" in args:
        return ()
    try:
        size_model(model, dict(args, drop_path_rate=rate))
    except VitlensError:
        return (f"{model} has no stochastic depth: drop_path {rate:g} not applied",)
    return ()


def load(source) -> dict:
    """A declaration as a dict: a dict, a YAML file, or the name of a preset."""
    if isinstance(source, dict):
        return dict(source)
    if not isinstance(source, (str, os.PathLike)):
        raise VitlensError(f"an experiment is a YAML file, a preset name or a dict, got {type(source).__name__}")
    text = str(source)
    path = Path(text).expanduser()
    if not path.suffix and (PRESETS / f"{text}.yaml").is_file():
        path = PRESETS / f"{text}.yaml"
    try:
        data = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise VitlensError(f"no experiment file {text} and no preset of that name; presets: "
                           f"{', '.join(preset_names())}") from None
    except (OSError, UnicodeDecodeError) as error:
        raise VitlensError(f"cannot read the experiment {text}: {getattr(error, 'strerror', None) or error}") from None
    except yaml.YAMLError as error:
        where = getattr(error, "problem_mark", None)
        at = f" (line {where.line + 1})" if where is not None else ""
        raise VitlensError(f"{text} is not valid YAML{at}: {getattr(error, 'problem', None) or 'parse error'}") from None
    if not isinstance(data, dict):
        raise VitlensError(f"{text} must hold a mapping of the experiment's keys ({', '.join(KEYS)})")
    data.setdefault("name", path.stem)
    return data


def preset_names() -> list[str]:
    return sorted(p.stem for p in PRESETS.glob("*.yaml"))


def parse(source) -> Experiment:
    """The checked Experiment of SOURCE (see the module docstring); one line for the first bad value."""
    data = load(source)
    unknown = sorted(set(data) - set(KEYS))
    if unknown:
        raise VitlensError(f"unknown key '{unknown[0]}' in the experiment; its keys: {', '.join(KEYS)}")
    name = data.get("name") or "experiment"
    if not isinstance(name, str) or len(name) > 100:
        raise VitlensError("the experiment's name must be a short text")
    base = parse_request({k: v for k, v in (("dataset", data.get("dataset", "digits")),
                                            ("device", data.get("device", "auto")),
                                            ("batch_size", data.get("batch_size", 256))) if v is not None})
    train = data.get("train") or {}
    if not isinstance(train, dict):
        raise VitlensError("train must be a mapping (recipe, budget, epochs and recipe settings)")
    unknown = sorted(set(train) - set(TRAIN_KEYS))
    if unknown:
        raise VitlensError(f"unknown key 'train.{unknown[0]}'; train's keys: {', '.join(TRAIN_KEYS)}")
    overrides = {k: v for k, v in train.items() if k in RECIPE_FIELDS}
    recipe_names = _list(data.get("recipes"), "recipes") or [train.get("recipe", "paper")]
    recipes = [recipe(dict(overrides, recipe=r) if isinstance(r, str) else dict(r, **overrides)) for r in recipe_names]
    budget = train.get("budget", "epochs")
    if budget not in ("epochs", "steps"):
        raise VitlensError(f"train.budget must be epochs or steps, got {budget!r}")
    epochs = train.get("epochs", 10)
    if isinstance(epochs, bool) or not isinstance(epochs, int) or not 1 <= epochs <= 100000:
        raise VitlensError(f"train.epochs must be a whole number from 1 to 100000, got {epochs!r}")

    models = [_model(m) for m in _list(data.get("models"), "models")]
    if not models:
        raise VitlensError("models: name at least one model")
    for model, args in models:
        size_model(model, check_model_args(dict(args, pretrained=False)))  # unknown model or args: one line here
    fractions = _list(data.get("fractions"), "fractions") or [1.0]
    for f in fractions:
        if isinstance(f, bool) or not isinstance(f, (int, float)) or not 0 < f <= 1:
            raise VitlensError(f"fractions are numbers in (0, 1], got {f!r}")
    seeds = _list(data.get("seeds"), "seeds") or [0]
    for s in seeds:
        if isinstance(s, bool) or not isinstance(s, int) or not 0 <= s < 2 ** 32:
            raise VitlensError(f"seeds are whole numbers from 0, got {s!r}")

    analyse = dict(data.get("analyse") or {})
    if not isinstance(data.get("analyse") or {}, dict):
        raise VitlensError("analyse must be a mapping: epochs and {analysis: {options}}")
    keep_value = analyse.pop("epochs", "all")
    if isinstance(keep_value, str) and keep_value != "all" and not keep_value.startswith("every:"):
        raise VitlensError(f"analyse.epochs must be all, every:N or a list of epochs, got {keep_value!r}")
    if isinstance(keep_value, list) and any(isinstance(e, bool) or not isinstance(e, int) or e < 0 for e in keep_value):
        raise VitlensError(f"analyse.epochs lists whole numbers from 0, got {keep_value!r}")
    try:
        keep = tuple(select_epochs(keep_value, epochs))
    except ValueError:
        raise VitlensError(f"analyse.epochs must be all, every:N or a list of epochs, got {keep_value!r}") from None
    analyses = {k: dict(v or {}) if isinstance(v, dict) or v is None else v for k, v in analyse.items()}
    check_analyses(analyses)

    cells = tuple(Cell(model, args, float(f), r, s, _drop_path_note(model, args, r.drop_path))
                  for model, args in models for f in fractions for r in recipes for s in seeds)
    most = env_number("VITLENS_MAX_CELLS", MAX_CELLS)
    if len(cells) > most:
        raise VitlensError(f"the experiment has {len(cells)} cells, at most {most} (VITLENS_MAX_CELLS)")
    if len({json.dumps([c.model, c.model_args, c.fraction, c.recipe.to_json(), c.seed], sort_keys=True)
             for c in cells}) != len(cells):
        raise VitlensError("two cells of the experiment are the same: name each model, fraction, recipe and seed once")
    experiment = Experiment(name, base.dataset, cells, budget, epochs, keep, analyses, base.device, base.batch_size,
                            str(data.get("description") or ""), str(data.get("reproduces") or ""), data)
    cell_declaration = get_analysis("experiment_cell")
    for spec in experiment.specs():
        cell_declaration.parse(spec.params)  # the cell's own declaration has the last word
    return experiment

