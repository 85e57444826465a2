"""Checkpoints: load weights as data only, save them with metadata that loads back without pickle.

Loading accepts .pt/.pth/.pth.tar (a bare state_dict, or one under "state_dict", "model", "ema",
"model_ema" or "state_dict_ema") and .safetensors. Pickled files are opened with
``torch.load(weights_only=True)``, which refuses any object that is not plain tensors/containers, so
a malicious pickle cannot run code. "module." (DataParallel) and "_orig_mod." (torch.compile)
prefixes are stripped. Saving writes .safetensors with the metadata (model spec, data set, epoch,
accuracy, ...) as a JSON string in the file header.

Checkpoints from elsewhere in another key layout are converted on the way in (convert.py: timm 0.5
PiT/Swin, the authors' ResNet and AlterNet). A file that still does not fit names the mismatch and
the registered model it does fit (fit.py).
"""
from __future__ import annotations

import json
import pickle
import re
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from safetensors import safe_open
from safetensors.torch import load_file, save_file

from ..errors import VitlensError
from .convert import convert_state_dict
from .fit import fit_hint

NESTED_KEYS = ("state_dict", "model", "ema", "model_ema", "state_dict_ema")
PREFIXES = ("module.", "_orig_mod.")
SUFFIXES = (".pt", ".pth", ".pth.tar", ".bin", ".ckpt", ".safetensors")


def _first_line(err: BaseException) -> str:
    return (str(err).strip().splitlines() or [type(err).__name__])[0][:200]


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a weights file into a flat {name: tensor} dict, without running any code."""
    if str(path).startswith(("http://", "https://")):
        raise VitlensError(f"vitlens does not download checkpoints: fetch {path} first (e.g. curl -LO URL, "
                           "which needs a network) and pass --checkpoint FILE")
    path = Path(path)
    if not path.is_file():
        raise VitlensError(f"checkpoint not found: {path}")
    if not path.name.endswith(SUFFIXES):
        raise VitlensError(f"checkpoint '{path.name}' must end in one of {', '.join(SUFFIXES)}")
    if path.name.endswith(".safetensors"):
        try:
            state = load_file(str(path), device="cpu")
        except Exception as err:
            raise VitlensError(f"cannot read safetensors checkpoint {path.name}: {_first_line(err)}") from None
    else:
        try:
            state = torch.load(str(path), map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as err:
            text = str(err)
            if "GLOBAL" in text or "Unsupported global" in text:
                what = next((ln.strip() for ln in text.splitlines() if "GLOBAL" in ln), "code")
                what = what.split("GLOBAL", 1)[-1].split(" was not")[0].strip()[:120]
                raise VitlensError(
                    f"checkpoint {path.name} holds objects other than weights ({what}), refused: vitlens "
                    "loads weights only (weights_only=True)") from None
            raise VitlensError(f"cannot read checkpoint {path.name}: not a torch weights file") from None
        except Exception as err:
            raise VitlensError(f"cannot read checkpoint {path.name}: {_first_line(err)}") from None
    return _flatten(state, path.name)


def _flatten(state: Any, name: str) -> dict[str, torch.Tensor]:
    if isinstance(state, dict):
        for key in NESTED_KEYS:
            if isinstance(state.get(key), dict):
                state = state[key]
                break
    if not isinstance(state, dict) or not state:
        raise VitlensError(f"checkpoint {name} holds no state_dict (expected a dict of tensors)")
    out = {}
    for key, value in state.items():
        if not isinstance(value, torch.Tensor):
            continue  # e.g. epoch counters stored beside the weights
        for prefix in PREFIXES:
            while key.startswith(prefix):
                key = key[len(prefix):]
        out[key] = value
    if not out:
        raise VitlensError(f"checkpoint {name} holds no tensors")
    return out


def _describe(keys: list[str], limit: int = 3) -> str:
    more = f" (+{len(keys) - limit} more)" if len(keys) > limit else ""
    return ", ".join(keys[:limit]) + more


def _problems(own: dict, state: dict) -> list[str]:
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [f"{k} {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
              for k in own if k in state and state[k].shape != own[k].shape]
    problems = []
    if missing:
        problems.append(f"missing keys: {_describe(missing)}")
    if unexpected:
        problems.append(f"unexpected keys: {_describe(unexpected)}")
    if shapes:
        problems.append(f"shape mismatch: {_describe(shapes)}")
    return problems


def load_checkpoint(model: nn.Module, path: str | Path, allow_nonfinite: bool = False) -> nn.Module:
    """Load weights from PATH into MODEL (strict: every key and shape must match). Weights that are
    not all finite (NaN, Inf) are refused, naming the first such tensor, unless ALLOW_NONFINITE.

    A state_dict in another known key layout (`convert.CONVERTERS`: timm 0.5 PiT/Swin, the authors' ResNet
    and AlterNet) is converted first. When it does not fit, the one-line error names the first
    mismatches and, where one does, the registered model (and --model-args) the file fits.
    """
    raw = read_state_dict(path)
    state, layout = convert_state_dict(raw, model)
    own = model.state_dict()
    problems = _problems(own, state)
    if problems:
        spec = (getattr(model, "vitlens_spec", None) or {}).get("model")
        what = f" ({layout} layout)" if layout else ""
        raise VitlensError(f"checkpoint {Path(path).name}{what} does not fit the model{f' {spec}' if spec else ''}; "
                           + "; ".join(problems) + fit_hint(raw, model))
    if not allow_nonfinite:
        bad = next((k for k, v in state.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())), None)
        if bad is not None:
            raise VitlensError(f"checkpoint {Path(path).name} has non-finite weights (NaN or Inf) in {bad}; every "
                               "number it gives would be meaningless (pass --allow-nonfinite to load it anyway)")
    with torch.no_grad():
        model.load_state_dict({k: v.to(own[k].dtype) for k, v in state.items()}, strict=True)
    return model



def save_checkpoint(model: nn.Module, path: str | Path, metadata: dict | None = None) -> Path:
    """Save MODEL's weights as .safetensors with METADATA (JSON) in the header.

    The model's spec (``model.vitlens_spec``) is always included so the file says how to rebuild it.
    """
    path = Path(path)
    if not path.name.endswith(".safetensors"):
        raise VitlensError("vitlens saves checkpoints as .safetensors")
    meta = dict(getattr(model, "vitlens_spec", {}) or {})
    meta.update(metadata or {})
    # clone: safetensors refuses tensors that share memory (tied weights)
    state = {k: v.detach().cpu().contiguous().clone() for k, v in model.state_dict().items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    save_file(state, str(tmp), metadata={"vitlens": json.dumps(meta, sort_keys=True, default=str)})
    tmp.replace(path)  # atomic: a crash mid-save leaves no half-written checkpoint
    return path


def read_checkpoint_metadata(path: str | Path) -> dict:
    """The metadata saved by `save_checkpoint` ({} for files from elsewhere)."""
    path = Path(path)
    if not path.name.endswith(".safetensors"):
        return {}
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
    except Exception as err:
        raise VitlensError(f"cannot read safetensors checkpoint {path.name}: {_first_line(err)}") from None
    try:
        return json.loads(meta.get("vitlens", "{}"))
    except json.JSONDecodeError:
        return {}


EPOCH_FILE = re.compile(r"epoch_(\d+)\.safetensors")


def epoch_files(folder: str | Path) -> list[tuple[int, Path]]:
    """(epoch, path) of every epoch_NNN.safetensors in FOLDER (from `vitlens train` or an experiment), in order."""
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise VitlensError(f"--checkpoints must be a folder of epoch_*.safetensors files, got {folder}")
    found = sorted((int(m.group(1)), p) for p in folder.glob("epoch_*.safetensors")
                   if (m := EPOCH_FILE.fullmatch(p.name)))
    if not found:
        raise VitlensError(f"no epoch_*.safetensors checkpoints in {folder} (write them with `vitlens train`)")
    return found


def select_epochs(value, last: int) -> list[int]:
    """'all', 'every:N' (and the last) or a list -> sorted epochs from 0 to LAST (0 = the initialisation)."""
    if isinstance(value, (list, tuple)):
        return sorted({int(e) for e in value if 0 <= int(e) <= last})
    if value in (None, "all"):
        return list(range(last + 1))
    every = int(str(value).split(":", 1)[1])
    return sorted(set(range(0, last + 1, every)) | {last})
