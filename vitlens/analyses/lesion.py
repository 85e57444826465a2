"""Lesion study: accuracy and NLL with one block's residual branch removed (Park & Kim 2022, Sec. 4).

For each skippable block i the model runs with block i replaced by its shortcut (x + f(x) -> x, or the
projection shortcut of a downsampling block), everything else intact; the drop against the intact model
says how much the network relies on that block (the paper finds MSAs at the end of a stage matter most).

Prefix reuse: blocks 0..i-1 compute the same thing whichever later block is lesioned, so each batch
runs the intact model once, keeping the state entering every lesioned block, and each lesion resumes
from there (block i's shortcut, then blocks i+1..end). For L equally costly blocks this costs about
half of L full evaluations.
"""
from __future__ import annotations

from typing import Iterable, Sequence

import pandas as pd
import torch

from ..context import Context
from ..errors import VitlensError
from ..features import batch_input, block_table, resolve_blocks
from ..models import Block, run_blocks
from ..options import Option
from ..result import Result
from . import Figure, Memory, Page, register_analysis
from ..metrics import Scores


@torch.no_grad()
def lesion_scores(block_list: Sequence[Block], loader: Iterable, device: torch.device | str = "cpu",
                  progress=None, reuse_prefix: bool = True, targets: Sequence[int] | None = None
                  ) -> tuple[Scores, dict[int, Scores]]:
    """(intact scores, {block index: scores with that block's residual branch removed}).

    TARGETS are the blocks to lesion (default: every skippable block). With `reuse_prefix=False`
    every lesion re-runs the whole model (the naive reference)."""
    block_list = list(block_list)
    targets = [i for i, b in enumerate(block_list) if b.skippable] if targets is None else list(targets)
    for i in targets:
        if not block_list[i].skippable:
            raise VitlensError(f"block {block_list[i].name} ({block_list[i].kind}) has no residual branch to remove")
    intact, lesioned = Scores(), {i: Scores() for i in targets}
    wanted = set(targets)
    for batch in loader:
        x, labels = batch_input(batch)
        if labels is None:
            raise VitlensError("the lesion study needs labelled data")
        x = x.to(device)
        if reuse_prefix:
            entering: dict[int, object] = {}  # the intact state entering each lesioned block
            state = x
            for i, block in enumerate(block_list):
                if i in wanted:
                    entering[i] = state
                state = block(state)
            intact.add(state, labels)
            for i in targets:
                state = block_list[i](entering.pop(i), skip=True)
                for block in block_list[i + 1:]:
                    state = block(state)
                lesioned[i].add(state, labels)
        else:
            intact.add(run_blocks(block_list, x), labels)
            for i in targets:
                lesioned[i].add(run_blocks(block_list, x, skip=[i]), labels)
        if progress is not None:
            progress.update(1)
    return intact, lesioned


def lesion_frame(block_list: Sequence[Block], intact: Scores, lesioned: dict[int, Scores]) -> pd.DataFrame:
    """Rows: block, name, kind, stage, depth, accuracy, nll, accuracy_drop (intact - lesioned),
    nll_increase (lesioned - intact), intact_accuracy, intact_nll."""
    table = block_table(block_list)
    rows = [dict(table[i], accuracy=s.accuracy, nll=s.nll, accuracy_drop=intact.accuracy - s.accuracy,
                 nll_increase=s.nll - intact.nll, intact_accuracy=intact.accuracy, intact_nll=intact.nll)
            for i, s in sorted(lesioned.items())]
    return pd.DataFrame(rows, columns=["block", "name", "kind", "stage", "depth", "accuracy", "nll",
                                       "accuracy_drop", "nll_increase", "intact_accuracy", "intact_nll"])


@register_analysis("lesion", "accuracy and NLL with each block's residual branch removed, and the drop vs the "
                   "intact model (Park & Kim Sec. 4)", [Option("reuse_prefix", bool, True, "reuse the blocks before the lesion (same numbers, faster)")],
                   conventions="a block's residual branch replaced by the identity (shortcut kept)", lane="interactive",
                   page=Page("Lesion study", "Lesion", 5, options=(), caption=(
                       "Accuracy drop when one block's residual branch is replaced by the identity (only the shortcut "
                       "kept). The paper finds that removing an MSA near the end of a stage hurts far more than "
                       "removing one early, which is why AlterNet puts MSAs at stage ends.")),
                   figures=[Figure("lesion_bars")], memory=Memory(graph=0.5, working=3))  # the kept block outputs
def lesion(ctx: Context, params: dict) -> Result:
    loader = ctx.loader()
    first = next(iter(loader))
    block_list = resolve_blocks(ctx.model, batch_input(first)[0][:2].to(ctx.device))
    if not any(b.skippable for b in block_list):
        raise VitlensError(f"no block of {ctx.spec.model} has a known residual branch to remove")
    progress = ctx.progress(len(loader), "lesion")
    intact, lesioned = lesion_scores(block_list, loader, ctx.device, progress,
                                     reuse_prefix=params["reuse_prefix"])
    frame = lesion_frame(block_list, intact, lesioned)
    worst = frame.loc[frame["accuracy_drop"].idxmax()]
    summary = dict(intact_accuracy=intact.accuracy, intact_nll=intact.nll, samples=intact.count,
                   largest_drop=dict(name=worst["name"], kind=worst["kind"],
                                     accuracy_drop=float(worst["accuracy_drop"])))
    return Result(frame, {"analysis": "lesion", "summary": summary})
