"""Checkpoints from elsewhere in another key layout, converted on the way in.

`CONVERTERS` holds one entry per layout, detected from the keys: the timm 0.5 (early 2022) PiT and
Swin layouts of the paper's released CIFAR-100 checkpoints (`released.RELEASED`), the authors' own
ResNet (models/resnet.py) and AlterNet key names. `convert_state_dict` applies the first that fits;
`register_converter` adds one.
"""
from __future__ import annotations

import importlib
import inspect
import re
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn as nn

from ..errors import VitlensError
from . import alternet
from .alternet import AlterNet


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

