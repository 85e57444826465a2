"""Which registered models a state dict fits: the hint that ends `load_checkpoint`'s error when a file
does not fit the model it was given (`fit_hint`), from `fitting_models`.

Candidate models are built on the meta device (shapes only) and the state dict, converted to each
one's key layout (`convert.convert_state_dict`), is compared key by key and shape by shape.
"""
from __future__ import annotations

import copy
import functools
import json
import re

import torch
import torch.nn as nn

from .convert import convert_state_dict
from .registry import list_models


class _SkipInit(torch.overrides.TorchFunctionMode):
    """Skip in-place ops on meta tensors (weight init: values do not exist there, and running the
    init's decompositions on meta costs far more than building the model); shape-changing ones run."""

    KEEP = {"resize_", "resize_as_", "set_", "t_", "transpose_", "squeeze_", "unsqueeze_", "as_strided_",
            "swapdims_", "swapaxes_", "requires_grad_", "share_memory_"}

    def __torch_function__(self, func, types, args=(), kwargs=None):
        name = getattr(func, "__name__", "")
        if (name.endswith("_") and not name.endswith("__") and name not in self.KEEP and args
                and isinstance(args[0], torch.Tensor) and args[0].is_meta):
            return args[0]
        return func(*args, **(kwargs or {}))


def _build_meta(entry, args: dict):
    """ENTRY's model with ARGS on the meta device (shapes only, no memory, fast); None if it fails."""
    try:
        with torch.device("meta"), _SkipInit():
            return entry.build(**args)
    except Exception:
        return None


_INDEX = re.compile(r"\.\d+(?=\.)")


def _signature(keys) -> set[str]:
    """Key names with the layer indices blanked: the same for a model at any depth."""
    return {_INDEX.sub(".#", k) for k in keys}


@functools.lru_cache(maxsize=None)
def _default_model(name: str):
    entry = next(e for e in list_models() if e.name == name)
    return _build_meta(entry, copy.deepcopy(entry.defaults))


def _fits(entry, args: dict, state: dict) -> dict | None:
    """The args (ARGS, with num_classes read from STATE if that is all that differs) with which
    ENTRY's model takes STATE; None if it does not."""
    for _ in range(2):
        model = _build_meta(entry, args)
        if model is None:
            return None
        converted, _ = convert_state_dict(state, model)
        own = model.state_dict()
        if set(own) != set(converted):
            return None
        bad = [k for k in own if own[k].shape != converted[k].shape]
        if not bad:
            return args
        # only the classifier differs: try again with the checkpoint's number of classes
        n = args.get("num_classes")
        sizes = {converted[k].shape[0] for k in bad}
        if n is None or len(sizes) != 1 or any(own[k].shape[0] != n or converted[k].shape[1:] != own[k].shape[1:]
                                               for k in bad):
            return None
        args = dict(args, num_classes=sizes.pop())
    return None


def fitting_models(state: dict, model: nn.Module | None = None) -> list[tuple[str, dict]]:
    """Registered models that take STATE: [(name, model args beyond the defaults)], those of MODEL's
    family first (built with MODEL's own model args where they do not define the variant)."""
    entries = list_models()
    spec = (getattr(model, "vitlens_spec", None) or {}) if model is not None else {}
    current = next((e for e in entries if e.name == spec.get("model")), None)
    user = dict(spec.get("model_args") or {})
    order = sorted(entries, key=lambda e: 0 if current is not None and e.family == current.family else 1)
    found = []
    for entry in order:
        if current is not None and entry.family == current.family:
            differ = {k for k in set(entry.defaults) | set(current.defaults)
                      if entry.defaults.get(k, None) != current.defaults.get(k, None)}
            extra = {k: v for k, v in user.items() if k not in differ}
        else:
            if found:
                break  # another family only when none of this one fits
            extra = {}
            probe = _default_model(entry.name)  # cheap test first: the same module names, any depth
            if probe is None or _signature(convert_state_dict(state, probe)[0]) != _signature(probe.state_dict()):
                continue
        args = copy.deepcopy(entry.defaults)
        args.update(extra)
        got = _fits(entry, args, state)
        if got is not None:
            found.append((entry.name, {k: v for k, v in got.items() if entry.defaults.get(k, None) != v
                                       or k in extra}))
    return found


def _args_json(args: dict) -> str:
    return json.dumps({k: list(v) if isinstance(v, tuple) else v for k, v in args.items()})


_DEFAULT = "(default)"


def fit_hint(state: dict, model: nn.Module) -> str:
    try:
        found = fitting_models(state, model)
    except Exception:
        return ""
    if not found:
        return ""
    entries = {e.name: e for e in list_models()}
    spec = (getattr(model, "vitlens_spec", None) or {})
    name, args = found[0]
    current = entries.get(spec.get("model"))
    if current is not None and name == current.name:
        return f"; it fits {name} with --model-args '{_args_json(args)}'"
    why = ""
    if current is not None and current.family == entries[name].family:
        theirs, ours = entries[name].defaults, current.defaults
        diff = [k for k in list(theirs) + [k for k in ours if k not in theirs]
                if k != "num_classes" and theirs.get(k, "default") != ours.get(k, "default")]
        if diff:
            why = (f" ({', '.join(f'{k}={theirs.get(k, _DEFAULT)}' for k in diff)}; {current.name} has "
                   f"{', '.join(f'{k}={ours.get(k, _DEFAULT)}' for k in diff)})")
    tail = f" --model-args '{_args_json(args)}'" if args else ""
    return f"; it fits the registered model {name}{why}: --model {name}{tail}"

