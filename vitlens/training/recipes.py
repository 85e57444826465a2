"""Training recipes: named presets after the authors' configs, plus overrides.

The authors' protocol (xxxnell/how-do-vits-work, `configs/cifar100_vit.yaml`, used for CNNs and ViTs
alike): AdamW, lr 1.25e-4, weight decay 0.05, batch 96, 300 epochs with 5 warm-up epochs, cosine
schedule to 0, RandAugment (m 9, n 2) after a 4-pixel-padded crop and a flip, mixup 1.0, cutmix 0.8
(one of the two per batch), label smoothing 0.1, gradient clipping at norm 5, stochastic depth 0.1.
`cifar100_vit_noaug.yaml`: crop and flip only, no mixing, no smoothing, no clipping, the same optimiser.

Deviations vitlens makes are named in `DEVIATIONS` and recorded with every trained cell.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields, replace

from ..errors import VitlensError

AUGMENTS = (None, "crop_flip", "randaugment")


@dataclass(frozen=True)
class Recipe:
    """How a model is trained. `drop_path` is the model's stochastic depth (its `drop_path_rate`)."""

    name: str = "custom"
    lr: float = 1.25e-4
    weight_decay: float = 0.05
    batch_size: int = 96
    warmup_epochs: float = 5.0
    augment: str | None = "randaugment"
    label_smoothing: float = 0.1
    mixup: float = 1.0
    cutmix: float = 0.8
    clip: float | None = 5.0
    drop_path: float = 0.1

    def check(self) -> "Recipe":
        """One line for the first value out of range."""
        bounds = dict(lr=(1e-12, 10.0), weight_decay=(0.0, 100.0), warmup_epochs=(0.0, 1e5),
                      label_smoothing=(0.0, 0.999), mixup=(0.0, 100.0), cutmix=(0.0, 100.0), drop_path=(0.0, 0.99))
        for name, (low, high) in bounds.items():
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
                raise VitlensError(f"train.{name} must be a number from {low:g} to {high:g}, got {value!r}")
        if isinstance(self.batch_size, bool) or not isinstance(self.batch_size, int) or not 1 <= self.batch_size <= 65536:
            raise VitlensError(f"train.batch_size must be a whole number from 1 to 65536, got {self.batch_size!r}")
        if self.augment not in AUGMENTS:
            raise VitlensError(f"train.augment must be one of none, crop_flip, randaugment; got {self.augment!r}")
        if self.clip is not None and (isinstance(self.clip, bool) or not isinstance(self.clip, (int, float))
                                      or not 0 < self.clip <= 1e6):
            raise VitlensError(f"train.clip must be a positive number or null, got {self.clip!r}")
        return self

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "Recipe":
        try:
            data = json.loads(text)
        except ValueError:
            raise VitlensError(f"a recipe must be a preset name ({', '.join(PRESETS)}) or a JSON object") from None
        return recipe(data)


PRESETS = {
    "paper": Recipe("paper"),  # configs/cifar100_vit.yaml
    "noaug": Recipe("noaug", augment="crop_flip", label_smoothing=0.0, mixup=0.0, cutmix=0.0, clip=None),
}
FIELDS = tuple(f.name for f in fields(Recipe) if f.name != "name")

# What vitlens does differently from the authors' training code, said with every cell.
DEVIATIONS = (
    "the schedule is per optimiser step (linear warm-up, then cosine to 0), the authors' per epoch",
    "weight decay skips biases and normalisation parameters (timm's default; the authors decay all)",
)


def recipe(value) -> Recipe:
    """A Recipe from a preset name, a Recipe, or a dict {"recipe": PRESET, field: override, ...}."""
    if isinstance(value, Recipe):
        return value.check()
    if isinstance(value, str):
        if value.strip().startswith("{"):
            return Recipe.from_json(value)
        if value not in PRESETS:
            raise VitlensError(f"unknown recipe {value!r}; presets: {', '.join(PRESETS)}")
        return PRESETS[value]
    if not isinstance(value, dict):
        raise VitlensError(f"a recipe must be a preset name or a mapping, got {type(value).__name__}")
    data = dict(value)
    if set(data) == {"name", *FIELDS}:  # a whole recipe (`Recipe.to_json`): taken as it is
        if data.get("augment") in ("none", ""):
            data["augment"] = None
        return Recipe(**data).check()
    base_name = data.pop("recipe", None) or "paper"
    if base_name not in PRESETS and base_name != "custom":
        raise VitlensError(f"unknown recipe {base_name!r}; presets: {', '.join(PRESETS)}")
    unknown = sorted(set(data) - set(FIELDS))
    if unknown:
        raise VitlensError(f"unknown training setting {unknown[0]!r}; the recipe's settings: {', '.join(FIELDS)}")
    if data.get("augment") in ("none", ""):
        data["augment"] = None
    base = PRESETS.get(base_name, Recipe())
    for key in ("lr", "weight_decay", "warmup_epochs", "label_smoothing", "mixup", "cutmix", "drop_path"):
        if isinstance(data.get(key), int) and not isinstance(data.get(key), bool):
            data[key] = float(data[key])
    name = base_name if not data else f"{base_name}+" + ",".join(f"{k}={data[k]}" for k in sorted(data))
    return replace(base, name=name, **data).check()
