"""Sizing a model before it is built: bounds on the architecture arguments that scale memory, then a
build on PyTorch's `meta` device (shapes only, no memory) that turns any argument the constructor
refuses into one line and counts the parameters.

The bounds come first: a ViT of depth 1,000,000 takes minutes even on `meta`. Each bound that scales
memory can be raised with its environment variable (a team that studies large models sets
`VITLENS_MAX_WIDTH=8192`); the parameter count is capped by `VITLENS_MAX_PARAMS` (default 1e9).
"""
from __future__ import annotations

import functools
import json
import math
import os
from dataclasses import dataclass

import torch
import torch.nn as nn

from ..errors import VitlensError
from .registry import load_model


@dataclass(frozen=True)
class Bound:
    """A numeric architecture argument (or each item of a list of them) lies in [LOW, HIGH]; ENV, when
    set, raises HIGH. WHOLE: integers only."""

    low: float
    high: float
    env: str | None = None
    whole: bool = True

    def limit(self) -> float:
        text = os.environ.get(self.env, "").strip() if self.env else ""
        if not text:
            return self.high
        try:
            return float(text)
        except ValueError:
            raise VitlensError(f"{self.env} must be a number, got {text!r}") from None


WIDTH = Bound(1, 4096, "VITLENS_MAX_WIDTH")
DEPTH = Bound(1, 64, "VITLENS_MAX_DEPTH")
RATE = Bound(0.0, 0.99, whole=False)
ARG_BOUNDS = {
    "depth": DEPTH, "depths": DEPTH, "layers": DEPTH,
    "embed_dim": WIDTH, "width": WIDTH, "widths": WIDTH, "dims": WIDTH, "base_dims": WIDTH, "channels": WIDTH,
    "stem_width": WIDTH, "head_dim": WIDTH,
    "num_heads": Bound(1, 256, "VITLENS_MAX_HEADS"), "heads": Bound(1, 256, "VITLENS_MAX_HEADS"),
    "mlp_ratio": Bound(0.01, 16, "VITLENS_MAX_MLP_RATIO", whole=False),
    "img_size": Bound(1, 1024, "VITLENS_MAX_IMG_SIZE"),
    "patch_size": Bound(1, 256), "in_chans": Bound(1, 64), "window_size": Bound(1, 256), "window": Bound(1, 256),
    "stride": Bound(1, 64), "reg_tokens": Bound(0, 64), "output_stride": Bound(8, 32),
    "drop_rate": RATE, "drop_path_rate": RATE, "attn_drop_rate": RATE, "proj_drop_rate": RATE,
    "pos_drop_rate": RATE, "patch_drop_rate": RATE, "drop_block_rate": RATE,
    "cardinality": Bound(1, 256), "base_width": WIDTH, "head_hidden_size": WIDTH, "kernel_sizes": Bound(1, 31),
    "down_kernel_size": Bound(1, 31),
}
MAX_PARAMS = Bound(1, 1e9, "VITLENS_MAX_PARAMS")
MAX_TOTAL_DEPTH = 256  # blocks over all stages (a list of depths)


def check_bounds(args: dict) -> None:
    """One line for the first architecture argument outside its bound (before anything is built)."""
    for name, value in args.items():
        bound = ARG_BOUNDS.get(name)
        if bound is None:
            continue
        items = value if isinstance(value, list) else [value]
        high = bound.limit()
        for item in items:
            kind_ok = isinstance(item, (int, float)) and not isinstance(item, bool)
            if kind_ok and bound.whole and float(item) != int(item):
                kind_ok = False
            if not kind_ok or not bound.low <= item <= high:
                what = "a whole number" if bound.whole else "a number"
                raise_with = f" (raise it with {bound.env})" if bound.env else ""
                raise VitlensError(f"model arg {name} must be {what} from {bound.low:g} to {high:g}{raise_with}, "
                                   f"got {json.dumps(value)[:60]}")
        if isinstance(value, list) and bound is DEPTH and sum(items) > MAX_TOTAL_DEPTH:
            raise VitlensError(f"model arg {name} adds up to {sum(items)} blocks, more than {MAX_TOTAL_DEPTH}")


@dataclass(frozen=True)
class Sizing:
    """What a build and one forward pass on the meta device tell: parameters, and per input sample the
    floats every module outputs (summed, and the largest one)."""

    params: int
    input_size: tuple
    activations: int  # floats output by all leaf modules for one sample
    largest: int      # the largest single output, floats per sample


def _first_line(err: Exception) -> str:
    return f"{type(err).__name__}: {(str(err).strip().splitlines() or [''])[0][:200]}"


@functools.lru_cache(maxsize=256)
def _meta_sizing(spec: str, args_json: str) -> Sizing:
    args = {k: v for k, v in json.loads(args_json).items() if k != "pretrained"}
    try:
        with torch.device("meta"):
            model = load_model(spec, **args)
    except VitlensError:
        raise
    except Exception as err:  # the constructor refused an argument: its own message, one line
        raise VitlensError(f"{spec} cannot be built with model args {args_json}: {_first_line(err)}") from None
    input_size = tuple((getattr(model, "pretrained_cfg", None) or {}).get("input_size", (3, 32, 32)))
    if isinstance(args.get("in_chans"), int):  # the config keeps the default channels
        input_size = (args["in_chans"], *input_size[1:])
    outputs: list[int] = []

    def hook(module, inputs, output):
        if isinstance(output, torch.Tensor):
            outputs.append(output.numel())
    handles = [m.register_forward_hook(hook) for m in model.modules() if not list(m.children())]
    try:
        with torch.no_grad():
            model(torch.empty(1, *input_size, device="meta"))
    except Exception as err:  # shapes that do not fit (an image smaller than a patch, ...)
        raise VitlensError(f"{spec} with model args {args_json} cannot take a {'x'.join(map(str, input_size))} "
                           f"input: {_first_line(err)}") from None
    finally:
        for handle in handles:
            handle.remove()
    return Sizing(count_parameters(model), input_size, sum(outputs), max(outputs, default=0))


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def size_model(spec: str, args: dict) -> Sizing:
    """Check SPEC's architecture ARGS (bounds, then a build and a forward pass on the meta device) and
    size it; one-line VitlensErrors, and over `VITLENS_MAX_PARAMS` too."""
    check_bounds(args)
    sizing = _meta_sizing(spec, json.dumps(args, sort_keys=True))
    limit = MAX_PARAMS.limit()
    if sizing.params > limit:
        raise VitlensError(f"{spec} with these model args has {sizing.params / 1e6:,.1f} M parameters, over the "
                           f"limit of {limit / 1e6:,.0f} M (VITLENS_MAX_PARAMS)")
    return sizing


def parameter_bytes(params: int, dtype: torch.dtype = torch.float32) -> int:
    return params * (torch.finfo(dtype).bits // 8 if dtype.is_floating_point else 4)


def human(nbytes: float) -> str:
    units = ["B", "KiB", "MiB", "GiB", "TiB"]
    k = min(int(math.log(max(nbytes, 1), 1024)), len(units) - 1)
    return f"{nbytes / 1024 ** k:.1f} {units[k]}"
