"""One pass over the data through a model's blocks, reducing every block's output as it goes.

The feature analyses of Park & Kim 2022 (Fourier spectra, feature-map variance, CKA similarity) all
look at what each block outputs. `collect` runs the blocks in order on each batch and hands every
block's output to a set of *reducers*; a reducer keeps running sums (per block, independent of the
number of samples), so memory holds one batch's activations and the reducers' small state, never the
features of the whole data set. Several reducers share one pass (e.g. Fourier and variance together).

Normalised depth (`normalised_depth`) lines models up on one axis so that a compare view can
overlay them: the stem output is at 0, body block j (the j-th block that is neither stem nor head,
counting pooling/downsampling blocks and each MSA/MLP residual branch of a transformer layer) is at
j / L where L is the number of body blocks, so the last body block is at 1; the head is put at 1 too.
This is the "normalized depth" axis of the paper's Fig 8 and Fig 9.
"""
from __future__ import annotations

from typing import Any, Iterable, Sequence

import torch
import torch.nn as nn

from .device import full_precision
from .errors import VitlensError
from .models import Block, check_blocks, feature_map
from .models import blocks as split_blocks


def accumulator_dtype(device: torch.device | str) -> torch.dtype:
    """float64 for running sums (float32 on Apple MPS, which has no float64)."""
    return torch.float32 if torch.device(device).type == "mps" else torch.float64


def normalised_depth(block_list: Sequence[Block]) -> list[float]:
    """Stem 0, the j-th of L body blocks j / L, head 1 (see the module docstring)."""
    body = sum(1 for b in block_list if b.kind not in ("stem", "head"))
    depths, seen = [], 0
    for block in block_list:
        if block.kind == "stem":
            depths.append(0.0)
        elif block.kind == "head":
            depths.append(1.0)
        else:
            seen += 1
            depths.append(seen / body)
    return depths


def block_table(block_list: Sequence[Block]) -> list[dict]:
    """The columns every per-block row carries: block index, name, kind, stage, normalised depth."""
    return [dict(block=i, name=b.name, kind=b.kind, stage=b.stage, depth=d)
            for i, (b, d) in enumerate(zip(block_list, normalised_depth(block_list)))]


def resolve_blocks(model: nn.Module, x: torch.Tensor | None = None) -> list[Block]:
    """The model's blocks; a generic (guessed) split must reproduce the model's output on X."""
    block_list = split_blocks(model)
    if x is not None and any(b.guessed for b in block_list):
        ok, diff = check_blocks(model, x, block_list)
        if not ok:
            raise VitlensError(
                f"cannot find the blocks of {type(model).__name__}: the generic split into its top-level "
                f"children does not reproduce the model's output (max difference {diff:.3g})")
    return block_list


def batch_input(batch: Any) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(x, labels) from what a loader yields: a pair or a bare tensor."""
    if isinstance(batch, (tuple, list)):
        labels = batch[1] if len(batch) > 1 else None
        return batch[0], (None if labels is None else torch.as_tensor(labels).long())
    return batch, None


class Reducer:
    """Reduces block outputs as they stream past. Subclasses override what they need.

    `update(index, block, output, fmap)` sees one block's output on the current batch (`fmap` is
    `feature_map(output, block)`: a (B, C, H, W) map, or None for logits); `end_batch(labels)` runs
    after the last block of a batch.
    """

    def start(self, block_list: Sequence[Block], device: torch.device) -> None:
        self.block_list = list(block_list)
        self.device = torch.device(device)
        self.dtype = accumulator_dtype(device)

    def update(self, index: int, block: Block, output: Any, fmap: torch.Tensor | None) -> None:
        pass

    def end_batch(self, labels: torch.Tensor | None) -> None:
        pass


class RunningSum:
    """Per-block running sums of tensors (or scalars) and of the number of items summed."""

    def __init__(self):
        self.sums: dict[int, torch.Tensor] = {}
        self.counts: dict[int, int] = {}

    def add(self, index: int, total: torch.Tensor, count: int) -> None:
        if index in self.sums:
            self.sums[index] += total
            self.counts[index] += count
        else:
            self.sums[index] = total.clone()
            self.counts[index] = count

    def mean(self, index: int) -> torch.Tensor:
        return self.sums[index].cpu().double() / self.counts[index]

    def __contains__(self, index: int) -> bool:
        return index in self.sums


def skipped_maps(too_small: dict, block_list) -> dict:
    """{block name: "HxW map"} for the blocks a reducer skipped because their maps were too small."""
    return {block_list[i].name: f"{h}x{w} map" for i, (h, w) in too_small.items()}


@torch.no_grad()
@full_precision()  # float32 convolutions on a GPU too (no TF32)
def collect(model: nn.Module | Sequence[Block], loader: Iterable, reducers: Sequence[Reducer],
            device: torch.device | str | None = None, progress=None) -> list[Block]:
    """Run the blocks of MODEL in order over every batch of LOADER, feeding each block's output to
    every reducer. Returns the block list (the reducers hold the results).

    MODEL is a module (its blocks are found and, if guessed, checked on the first batch) or a list
    of blocks. `progress.update(1)` is called once per batch.
    """
    block_list = list(model) if isinstance(model, (list, tuple)) else None
    if device is None:
        param = None if block_list is not None else next(model.parameters(), None)
        device = param.device if param is not None else torch.device("cpu")
    device = torch.device(device)
    started = False
    for batch in loader:
        x, labels = batch_input(batch)
        x = x.to(device)
        if not started:
            if block_list is None:
                block_list = resolve_blocks(model, x[:2])
            for reducer in reducers:
                reducer.start(block_list, device)
            started = True
        state: Any = x
        for i, block in enumerate(block_list):
            state = block(state)
            fmap = feature_map(state, block)
            for reducer in reducers:
                reducer.update(i, block, state, fmap)
            del fmap
        del state
        for reducer in reducers:
            reducer.end_batch(labels)
        if progress is not None:
            progress.update(1)
    if not started:
        raise VitlensError("no data: the loader yielded no batches")
    return block_list
