"""One registry and one factory for every model vitlens studies.

A model SPEC is one of
  * ``timm:NAME``      any timm model, created with ``timm.create_model(NAME, **kwargs)``;
  * a registered name  the paper's CIFAR models, AlterNet variants and the demo models
                       (``vitlens models`` lists them); an optional ``vitlens:`` prefix is allowed.

Every model comes back in eval mode with a timm-style ``pretrained_cfg`` (input size, mean, std)
so that data transforms follow the model, and with ``vitlens_spec`` (spec and kwargs) so that a
saved checkpoint records how to rebuild it.
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from typing import Any, Callable

import torch.nn as nn

from ..errors import VitlensError

# The authors' normalisation (configs/cifar10_*.yaml, cifar100_*.yaml): a paper CIFAR model built
# for 100 classes gets CIFAR-100's, as their released CIFAR-100 checkpoints were trained with it.
CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.2023, 0.1994, 0.2010)
CIFAR100_MEAN = (0.5071, 0.4867, 0.4408)
CIFAR100_STD = (0.2675, 0.2565, 0.2761)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass
class ModelEntry:
    name: str
    family: str
    description: str
    build: Callable[..., nn.Module]
    defaults: dict = field(default_factory=dict)
    input_size: tuple = (3, 32, 32)
    mean: tuple = CIFAR_MEAN
    std: tuple = CIFAR_STD
    # For models with shipped weights: a callable that loads them into the model.
    pretrained: Callable[[nn.Module, dict], None] | None = None


_REGISTRY: dict[str, ModelEntry] = {}


def register_model(entry: ModelEntry) -> ModelEntry:
    _REGISTRY[entry.name] = entry
    return entry


def list_models() -> list[ModelEntry]:
    """Registered (non-timm) models, in registration order.

    The built-in models are registered by vitlens/models/__init__.py importing zoo; Python runs that
    before any module of the package, so this module does not import zoo (zoo imports it).
    """
    return list(_REGISTRY.values())


def _attach_config(model: nn.Module, spec: str, kwargs: dict, input_size, mean, std,
                   num_classes: int | None) -> nn.Module:
    cfg = dict(getattr(model, "pretrained_cfg", None) or {})
    cfg.update(input_size=tuple(input_size), mean=tuple(mean), std=tuple(std))
    cfg.setdefault("interpolation", "bilinear")
    cfg.setdefault("crop_pct", 1.0 if input_size[-1] <= 64 else 0.875)
    if num_classes is not None:
        cfg["num_classes"] = num_classes
    model.pretrained_cfg = cfg
    model.vitlens_spec = {"model": spec, "model_args": _jsonable(kwargs)}
    return model


def _jsonable(kwargs: dict) -> dict:
    out = {}
    for k, v in kwargs.items():
        out[k] = list(v) if isinstance(v, tuple) else v
    return out


def _create_timm(name: str, kwargs: dict) -> nn.Module:
    import timm  # deferred: heavy, and only timm:NAME models need it

    if not timm.is_model(name):
        close = timm.list_models(f"*{name.split('_')[0]}*")[:5]
        hint = f" (similar: {', '.join(close)})" if close else ""
        raise VitlensError(f"unknown timm model '{name}'{hint}; `vitlens models --timm PATTERN` lists names")
    pretrained = bool(kwargs.pop("pretrained", False))
    try:
        model = timm.create_model(name, pretrained=pretrained, **kwargs)
    except TypeError as err:
        raise VitlensError(f"timm:{name} does not take these arguments {sorted(kwargs)}: {err}") from None
    except Exception as err:  # timm / huggingface_hub raise many types when weights cannot be fetched
        if not pretrained:
            raise
        first = (str(err).strip().splitlines() or [""])[0][:160]
        raise VitlensError(
            f"cannot load pretrained weights for timm:{name} ({type(err).__name__}: {first}); offline, "
            "pass --checkpoint FILE with the weights, or put them in the Hugging Face cache (HF_HOME) "
            "and set HF_HUB_OFFLINE=1") from None
    return model


# --model-args is an allow-list of architecture keyword arguments (it arrives from URLs): nothing
# that names a file, a URL or a config (timm's checkpoint_path, pretrained_cfg_overlay, ...) gets in.
ARCHITECTURE_ARGS = frozenset({
    "num_classes", "img_size", "in_chans", "patch_size", "embed_dim", "depth", "num_heads", "mlp_ratio",
    "qkv_bias", "qk_norm", "window_size", "depths", "heads", "widths", "msa", "head_dim", "window", "stride",
    "base_dims", "drop_rate", "drop_path_rate", "attn_drop_rate", "proj_drop_rate", "global_pool",
    "class_token", "no_embed_class", "reg_tokens", "stem_width", "stem_type", "block", "layers", "stem",
    "output_stride", "dims", "width", "pretrained", "init_values", "layer_scale_init_value", "channels",
    # checked against timm's constructors (ResNet/ResNeXt, VisionTransformer, Swin, PiT, ConvNeXt): every
    # argument that only shapes the architecture; layers, init schemes and devices stay out
    "cardinality", "base_width", "replace_stem_pool", "block_reduce_first", "down_kernel_size", "avg_down",
    "drop_block_rate", "proj_bias", "pos_embed", "pre_norm", "final_norm", "fc_norm", "pool_include_prefix",
    "dynamic_img_size", "dynamic_img_pad", "pos_drop_rate", "patch_drop_rate", "always_partition",
    "strict_img_size", "distilled", "kernel_sizes", "ls_init_value", "head_hidden_size", "conv_mlp", "conv_bias",
    "use_grn", "head_norm_first", "norm_eps",
    "kernel_size"})  # ConvViT's attention neighbourhood
MAX_CLASSES = 25000  # above ImageNet-21k's 21,843: a typo, not a model (a team server caps lower: jobs.Limits)
MAX_IMG_SIZE = 2048


def check_model_args(args: Any) -> dict:
    """ARGS (from --model-args or a link) as a dict of allowed architecture arguments, or a one-line error."""
    if not isinstance(args, dict):
        raise VitlensError("model args must be a JSON object like {\"num_classes\": 10}")
    for key, value in args.items():
        if key not in ARCHITECTURE_ARGS:
            raise VitlensError(f"model arg '{key}' is not an architecture argument vitlens accepts "
                               f"(allowed: {', '.join(sorted(ARCHITECTURE_ARGS))}); weights come only "
                               "through --checkpoint")
        items = value if isinstance(value, list) else [value]
        if len(items) > 32 or not all(isinstance(v, (bool, int, float, str)) and
                                       not (isinstance(v, str) and (len(v) > 32 or "/" in v or "\\" in v))
                                       and not (isinstance(v, float) and not math.isfinite(v)) for v in items):
            raise VitlensError(f"model arg '{key}' must be a number, a short word or a short list of them, "
                               f"got {str(value)[:60]}")
    classes = args.get("num_classes")
    if classes is not None and (isinstance(classes, bool) or not isinstance(classes, int)
                                or not 1 <= classes <= MAX_CLASSES):
        raise VitlensError(f"num_classes must be a whole number from 1 to {MAX_CLASSES}, got {classes}")
    size = args.get("img_size")
    sizes = size if isinstance(size, list) else [size]
    if size is not None and not all(isinstance(v, int) and not isinstance(v, bool) and 1 <= v <= MAX_IMG_SIZE
                                    for v in sizes):
        raise VitlensError(f"img_size must be a whole number from 1 to {MAX_IMG_SIZE}, got {size}")
    return dict(args)


def load_model(spec: str, **kwargs: Any) -> nn.Module:
    """Build a model from its SPEC (``timm:NAME`` or a registered name), in eval mode.

    Keyword arguments go to the constructor (``num_classes=10, img_size=32``, ...).
    ``pretrained=True`` loads timm's weights (downloading them if needed) or, for the demo models,
    the weights that ship with vitlens.
    """
    if not isinstance(spec, str) or not spec.strip():
        raise VitlensError("a model spec is required, e.g. 'demo_resnet' or 'timm:resnet18'")
    spec = spec.strip()
    kwargs = dict(kwargs)
    if spec.startswith("timm:"):
        name = spec[len("timm:"):]
        model = _create_timm(name, dict(kwargs))
        cfg = getattr(model, "pretrained_cfg", {}) or {}
        model = _attach_config(model, spec, kwargs,
                               tuple(cfg.get("input_size", (3, 224, 224))),
                               tuple(cfg.get("mean", IMAGENET_MEAN)), tuple(cfg.get("std", IMAGENET_STD)),
                               getattr(model, "num_classes", None))
        if "img_size" in kwargs:  # timm keeps the default cfg's input size; follow the real one
            size = kwargs["img_size"]
            size = size if isinstance(size, (tuple, list)) else (size, size)
            model.pretrained_cfg["input_size"] = (model.pretrained_cfg["input_size"][0], *size)
        return model.eval()

    name = spec[len("vitlens:"):] if spec.startswith("vitlens:") else spec
    entry = _REGISTRY.get(name)
    if entry is None:
        known = ", ".join(_REGISTRY)
        raise VitlensError(f"unknown model '{spec}'; use timm:NAME or one of: {known}")
    pretrained = bool(kwargs.pop("pretrained", False))
    args = copy.deepcopy(entry.defaults)
    args.update(kwargs)
    try:
        model = entry.build(**args)
    except TypeError as err:
        raise VitlensError(f"{name} does not take these arguments {sorted(kwargs)}: {err}") from None
    input_size = entry.input_size
    if "img_size" in args:
        s = args["img_size"]
        input_size = (input_size[0], *(s if isinstance(s, (tuple, list)) else (s, s)))
    mean, std = entry.mean, entry.std
    if (mean, std) == (CIFAR_MEAN, CIFAR_STD) and args.get("num_classes") == 100:
        mean, std = CIFAR100_MEAN, CIFAR100_STD
    model = _attach_config(model, name, kwargs, input_size, mean, std, args.get("num_classes"))
    if pretrained:
        if entry.pretrained is None:
            raise VitlensError(f"{name} has no shipped weights; train it (`vitlens train`) or pass --checkpoint")
        entry.pretrained(model, args)
    return model.eval()
