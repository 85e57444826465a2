"""Checkpoints: load weights as data only, save them with metadata that loads back without pickle.

Loading accepts .pt/.pth/.pth.tar (a bare state_dict, or one under "state_dict", "model", "ema",
"model_ema" or "state_dict_ema") and .safetensors. Pickled files are opened with
``torch.load(weights_only=True)``, which refuses any object that is not plain tensors/containers, so
a malicious pickle cannot run code. "module." (DataParallel) and "_orig_mod." (torch.compile)
prefixes are stripped. Saving writes .safetensors with the metadata (model spec, data set, epoch,
accuracy, ...) as a JSON string in the file header.

Checkpoints from elsewhere in another key layout are converted on the way in (`CONVERTERS`, one entry
per layout, detected from the keys): the timm 0.5 (early 2022) PiT and Swin layouts of the paper's
released CIFAR-100 checkpoints (`RELEASED`), the authors' own ResNet (models/resnet.py) and AlterNet
key names. A file that still does not fit names the mismatch and the registered model it does fit.
"""
from __future__ import annotations

import copy
import functools
import importlib
import inspect
import json
import pickle
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn as nn

from safetensors import safe_open
from safetensors.torch import load_file, save_file

from ..errors import VitlensError
from . import alternet
from .alternet import AlterNet
from .registry import list_models

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

    A state_dict in another known key layout (`CONVERTERS`: timm 0.5 PiT/Swin, the authors' ResNet
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
                           + "; ".join(problems) + _fit_hint(raw, model))
    if not allow_nonfinite:
        bad = next((k for k, v in state.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())), None)
        if bad is not None:
            raise VitlensError(f"checkpoint {Path(path).name} has non-finite weights (NaN or Inf) in {bad}; every "
                               "number it gives would be meaningless (pass --allow-nonfinite to load it anyway)")
    with torch.no_grad():
        model.load_state_dict({k: v.to(own[k].dtype) for k, v in state.items()}, strict=True)
    return model


# ----------------------------------------------------------------------------- other key layouts

@dataclass(frozen=True)
class Converter:
    """How to read one foreign key layout into one family of models.

    `applies(model)`: is MODEL of the family; `detect(state)`: is STATE in this layout;
    `convert(state, model)`: the state_dict in MODEL's own names (tensors as they are). The first
    entry of `CONVERTERS` that applies and detects wins; `register_converter` adds one.
    """

    name: str
    applies: Callable[[nn.Module], bool]
    detect: Callable[[dict], bool]
    convert: Callable[[dict, nn.Module], dict]


CONVERTERS: list[Converter] = []


def register_converter(converter: Converter, first: bool = False) -> Converter:
    CONVERTERS.insert(0, converter) if first else CONVERTERS.append(converter)
    return converter


def convert_state_dict(state: dict[str, torch.Tensor], model: nn.Module) -> tuple[dict, str | None]:
    """STATE in MODEL's key names, and the name of the layout it was converted from (None: as is)."""
    for conv in CONVERTERS:
        try:
            hit = conv.applies(model) and conv.detect(state)
        except Exception:
            hit = False
        if hit:
            return conv.convert(dict(state), model), conv.name
    return state, None


def _timm_class(module: str, name: str):
    def applies(model: nn.Module) -> bool:
        return isinstance(model, getattr(importlib.import_module(f"timm.models.{module}"), name))
    return applies


_RESNET_INNER = {"conv1.0": "conv1", "conv1.1": "bn1", "conv2.0": "conv2", "conv2.1": "bn2", "conv3.0": "conv3",
                 "conv3.1": "bn3", "shortcut.0": "downsample.0", "shortcut.1": "downsample.1"}
_RESNET_BLOCK = re.compile(r"(layer[1-4]\.\d+)\.(conv[1-3]\.[01]|shortcut\.[01])\.(\w+)")


def _convert_authors_resnet(state: dict, model: nn.Module) -> dict:
    """The authors' ResNet (models/resnet.py with resnet_dnn_block, stem=False, GAP classifier) in
    timm ResNet names: layer0.0/.1 -> conv1/bn1, layerS.J.convK.0/.1 -> convK/bnK,
    shortcut.0/.1 -> downsample.0/.1, classifier.0.dense -> fc. Unknown keys stay as they are (the
    fit check then names them)."""
    out = {}
    for key, value in state.items():
        new = key
        if key.startswith("layer0.0."):
            new = "conv1." + key[len("layer0.0."):]
        elif key.startswith("layer0.1."):
            new = "bn1." + key[len("layer0.1."):]
        elif key.startswith("classifier.0.dense."):
            new = "fc." + key[len("classifier.0.dense."):]
        elif (m := _RESNET_BLOCK.fullmatch(key)) is not None:
            new = f"{m.group(1)}.{_RESNET_INNER[m.group(2)]}.{m.group(3)}"
        out[new] = value
    return out


def _convert_old_pit(state: dict, model: nn.Module) -> dict:
    """timm <= 0.5 PiT: the pooling that ends stage N (transformers.N.pool) is the pooling that starts
    stage N+1 in timm >= 0.9; timm's own filter covers the original repo's `pools.N`."""
    from timm.models.pit import checkpoint_filter_fn  # deferred: timm is heavy, only PiT checkpoints need it
    state = checkpoint_filter_fn(state, model) if any(k.startswith("pools.") for k in state) else state
    if any(k.startswith("transformers.0.pool.") for k in state):
        state = {re.sub(r"^transformers\.(\d+)\.pool\.", lambda m: f"transformers.{int(m.group(1)) + 1}.pool.", k): v
                 for k, v in state.items()}
    return state


def _convert_swin(state: dict, model: nn.Module) -> dict:
    """timm's Swin filter (timm <= 0.5 downsample at the end of a stage -> the start of the next,
    head -> head.fc, position-index/mask buffers dropped), but without its resampling: a patch
    embedding or relative-position table of another size is another model, so such tensors are
    kept as they are and the fit check reports them."""
    from timm.models.swin_transformer import checkpoint_filter_fn  # deferred: as in _convert_old_pit
    own = model.state_dict()
    keep = {k: v for k, v in state.items()
            if k.endswith(("patch_embed.proj.weight", "relative_position_bias_table"))
            and (k not in own or own[k].shape != v.shape)}
    out = checkpoint_filter_fn({k: v for k, v in state.items() if k not in keep}, model)
    out.update(keep)
    return out


def _authors_alternet(fn_name: str):
    """Hook for vitlens.models.alternet's converter of the authors' AlterNet names (looked up when
    used, so that module may add or rename it freely)."""
    def call(*args):
        fn = getattr(alternet, fn_name, None)
        if fn is None:
            if fn_name == "is_authors_state_dict":
                return False
            raise VitlensError("this vitlens has no converter for the authors' AlterNet keys")
        n = len(inspect.signature(fn).parameters)
        return fn(*args[:n])
    return call


def _alternet_applies(model: nn.Module) -> bool:
    return isinstance(model, AlterNet)


for _conv in (
    Converter("authors' AlterNet", _alternet_applies, _authors_alternet("is_authors_state_dict"),
              _authors_alternet("convert_authors_state_dict")),
    Converter("authors' ResNet", _timm_class("resnet", "ResNet"),
              lambda s: "layer0.0.weight" in s and any(k.startswith("classifier.0.") for k in s),
              _convert_authors_resnet),
    Converter("timm 0.5 PiT", _timm_class("pit", "PoolingVisionTransformer"),
              lambda s: any(k.startswith(("transformers.0.pool.", "pools.")) for k in s), _convert_old_pit),
    Converter("timm 0.5 Swin", _timm_class("swin_transformer", "SwinTransformer"),
              lambda s: "layers.0.downsample.reduction.weight" in s or any(
                  k.endswith(("relative_position_index", "attn_mask")) for k in s), _convert_swin),
):
    register_converter(_conv)


# ----------------------------------------------------------------------------- which model fits

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


def _fit_hint(state: dict, model: nn.Module) -> str:
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


# ----------------------------------------------------------------------------- released checkpoints

RELEASE_URL = "https://github.com/xxxnell/how-do-vits-work-storage/releases/download/v0.1/"


@dataclass(frozen=True)
class Released:
    """A CIFAR-100 checkpoint released with Park & Kim 2022 (linked from the authors' README)."""

    model: str  # the registered model it loads into (with num_classes 100)
    file: str
    source: str  # what wrote it
    dataset: str = "cifar100"
    num_classes: int = 100

    @property
    def url(self) -> str:
        return RELEASE_URL + self.file


RELEASED = (
    Released("resnet50_cifar", "resnet_50_cifar100_691cc9a9e4.pth.tar", "authors' models/resnet.py dnn_50(stem=False)"),
    Released("vit_ti_cifar", "vit_ti_cifar100_9857b21357.pth.tar", "timm 0.5 VisionTransformer"),
    Released("pit_ti_cifar", "pit_ti_cifar100_0645889efb.pth.tar", "timm 0.5 PoolingVisionTransformer"),
    Released("swin_ti_cifar", "swin_ti_cifar100_ec2894492b.pth.tar", "timm 0.5 SwinTransformer"),
)


def released_checkpoint(model: str) -> Released | None:
    """The released checkpoint that the registered MODEL loads, if any."""
    return next((r for r in RELEASED if r.model == model), None)


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
