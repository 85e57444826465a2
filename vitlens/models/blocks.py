"""Split a model into the ordered blocks that every depth plot of the paper is drawn over.

`blocks(model)` returns a list of `Block`s. Running them in order (`run_blocks`) reproduces the
model's own output. Each block has a name, a kind (stem, conv, msa, mlp, pool, head), a stage index
(stem 0, body stages 1..S, head S+1) and the modules/parameters it owns. For transformer layers a
block is one residual branch, as in Park & Kim 2022: ``x + attn(norm1(x))`` is an `msa` block and
``x + mlp(norm2(x))`` an `mlp` block. A residual block can be skipped (its residual branch replaced
by the identity, i.e. only the shortcut path is kept) for lesion studies.

Supported families: timm ResNet, ViT/DeiT, Swin, PiT, ConvNeXt, the paper's CIFAR models (built on
those), AlterNet and the demo models. Anything else falls back to the model's top-level children
with a guessed kind (flagged `guessed=True`); `check_blocks` tells whether such a split is faithful.

The state passed between blocks is what the model itself passes: NCHW maps for CNNs, NHWC maps for
Swin, (B, tokens, C) for ViTs, and a (map, class-tokens) pair for PiT. `feature_map` turns any block
output into a (B, C, H, W) map for the feature analyses (class/distillation tokens dropped).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Sequence

import torch
import torch.nn as nn

from ..errors import VitlensError
from .alternet import AlterNet, AttentionBlock

KINDS = ("stem", "conv", "msa", "mlp", "pool", "head")


@dataclass
class Block:
    """One step of a model's forward pass.

    `forward(state) -> state` runs the block; `shortcut(state) -> state`, where present, is the
    block with its residual branch removed (lesion). `layout` says how to read the output as a
    feature map: "nchw", "nhwc", "nlc" (tokens, `prefix_tokens` of them not spatial), "pit"
    ((map, class tokens) pair) or "logits".
    """

    name: str
    kind: str
    stage: int
    modules: list[nn.Module]
    forward: Callable[[Any], Any]
    shortcut: Callable[[Any], Any] | None = None
    layout: str = "nchw"
    prefix_tokens: int = 0
    downsamples: bool = False
    guessed: bool = False
    extra_params: list[nn.Parameter] = field(default_factory=list)

    @property
    def skippable(self) -> bool:
        return self.shortcut is not None

    def parameters(self) -> list[nn.Parameter]:
        """Parameters this block owns (each parameter belongs to exactly one block)."""
        seen, out = set(), []
        for p in [p for m in self.modules for p in m.parameters()] + list(self.extra_params):
            if id(p) not in seen:
                seen.add(id(p))
                out.append(p)
        return out

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def __call__(self, state: Any, skip: bool = False) -> Any:
        if skip:
            if self.shortcut is None:
                raise VitlensError(f"block {self.name} ({self.kind}) has no residual branch to remove")
            return self.shortcut(state)
        return self.forward(state)


# ----------------------------------------------------------------------------- families

def _vit_branches(blk: nn.Module):
    """The two residual branches of a pre-norm timm ViT block, as functions of the tokens."""
    def attn(x):
        return x + blk.drop_path1(blk.ls1(blk.attn(blk.norm1(x))))

    def mlp(x):
        return x + blk.drop_path2(blk.ls2(blk.mlp(blk.norm2(x))))
    return attn, mlp


def _is_prenorm_vit_block(blk: nn.Module) -> bool:
    from timm.models.vision_transformer import Block as TimmBlock  # deferred: timm is heavy (see blocks)
    return type(blk) is TimmBlock or (
        all(hasattr(blk, n) for n in ("norm1", "attn", "ls1", "drop_path1", "norm2", "mlp", "ls2", "drop_path2"))
        and type(blk).forward is TimmBlock.forward)


def _identity(x):
    return x


def _vit_blocks(model) -> list[Block]:
    prefix = int(getattr(model, "num_prefix_tokens", 1))

    def stem(x):
        return model.norm_pre(model.patch_drop(model._pos_embed(model.patch_embed(x))))

    extra = [p for p in (getattr(model, n, None) for n in ("cls_token", "reg_token", "dist_token", "pos_embed"))
             if isinstance(p, nn.Parameter)]
    out = [Block("stem", "stem", 0, [model.patch_embed, model.norm_pre], stem, layout="nlc",
                 prefix_tokens=prefix, extra_params=extra)]
    for i, blk in enumerate(model.blocks):
        if _is_prenorm_vit_block(blk):
            attn, mlp = _vit_branches(blk)
            out.append(Block(f"blocks.{i}.attn", "msa", 1, [blk.norm1, blk.attn, blk.ls1], attn,
                             shortcut=_identity, layout="nlc", prefix_tokens=prefix))
            out.append(Block(f"blocks.{i}.mlp", "mlp", 1, [blk.norm2, blk.mlp, blk.ls2], mlp,
                             shortcut=_identity, layout="nlc", prefix_tokens=prefix))
        else:  # other block designs (post-norm, parallel): keep whole, residual structure unknown
            out.append(Block(f"blocks.{i}", "msa", 1, [blk], blk, layout="nlc", prefix_tokens=prefix,
                             guessed=True))

    def head(x):
        return model.forward_head(model.norm(x))
    head_modules = [m for m in (model.norm, getattr(model, "fc_norm", None), getattr(model, "attn_pool", None),
                                model.head, getattr(model, "head_dist", None)) if isinstance(m, nn.Module)]
    out.append(Block("head", "head", 2, head_modules, head, layout="logits"))
    return out


def _timm_resnet_blocks(model) -> list[Block]:
    def stem(x):
        return model.maxpool(model.act1(model.bn1(model.conv1(x))))

    out = [Block("stem", "stem", 0, [model.conv1, model.bn1], stem)]
    for s in range(1, 5):
        layer = getattr(model, f"layer{s}")
        for j, blk in enumerate(layer):
            act = getattr(blk, "act3", None) or blk.act2

            def shortcut(x, blk=blk, act=act):
                return act(blk.downsample(x) if blk.downsample is not None else x)
            out.append(Block(f"layer{s}.{j}", "conv", s, [blk], blk, shortcut=shortcut,
                             downsamples=blk.downsample is not None and _has_stride(blk.downsample)))
    out.append(Block("head", "head", 5, [model.fc], model.forward_head, layout="logits"))
    return out


def _has_stride(module: nn.Module) -> bool:
    for m in module.modules():
        stride = getattr(m, "stride", 1)
        stride = stride if isinstance(stride, (tuple, list)) else (stride,)
        if any(s > 1 for s in stride):
            return True
    return False


def _swin_blocks(model) -> list[Block]:
    out = [Block("stem", "stem", 0, [model.patch_embed], model.patch_embed, layout="nhwc")]
    for s, layer in enumerate(model.layers, start=1):
        if not isinstance(layer.downsample, nn.Identity):
            out.append(Block(f"layers.{s - 1}.downsample", "pool", s, [layer.downsample], layer.downsample,
                             layout="nhwc", downsamples=True))
        for j, blk in enumerate(layer.blocks):
            def attn(x, blk=blk):
                return x + blk.drop_path1(blk._attn(blk.norm1(x)))

            def mlp(x, blk=blk):
                b, h, w, c = x.shape
                y = x.reshape(b, -1, c)
                y = y + blk.drop_path2(blk.mlp(blk.norm2(y)))
                return y.reshape(b, h, w, c)
            name = f"layers.{s - 1}.blocks.{j}"
            out.append(Block(f"{name}.attn", "msa", s, [blk.norm1, blk.attn], attn, shortcut=_identity,
                             layout="nhwc"))
            out.append(Block(f"{name}.mlp", "mlp", s, [blk.norm2, blk.mlp], mlp, shortcut=_identity,
                             layout="nhwc"))

    def head(x):
        return model.forward_head(model.norm(x))
    out.append(Block("head", "head", len(model.layers) + 1, [model.norm, model.head], head, layout="logits"))
    return out


def _pit_blocks(model) -> list[Block]:
    def stem(x):
        x = model.patch_embed(x)
        x = model.pos_drop(x + model.pos_embed)
        return x, model.cls_token.expand(x.shape[0], -1, -1)

    prefix = int(model.cls_token.shape[1])
    out = [Block("stem", "stem", 0, [model.patch_embed], stem, layout="pit", prefix_tokens=prefix,
                 extra_params=[model.pos_embed, model.cls_token])]

    def on_tokens(branch):
        """Apply a token-level residual branch to PiT's (map, class tokens) state."""
        def run(state):
            x, cls = state
            b, c, h, w = x.shape
            n = cls.shape[1]
            tokens = branch(torch.cat((cls, x.flatten(2).transpose(1, 2)), dim=1))
            return tokens[:, n:].transpose(1, 2).reshape(b, c, h, w), tokens[:, :n]
        return run

    for s, stage in enumerate(model.transformers, start=1):
        if stage.pool is not None or not isinstance(stage.norm, nn.Identity):
            def entry(state, stage=stage):
                x, cls = state
                if stage.pool is not None:
                    x, cls = stage.pool(x, cls)
                if not isinstance(stage.norm, nn.Identity):  # per-token norm: same on map and tokens
                    x = stage.norm(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
                    cls = stage.norm(cls)
                return x, cls
            mods = [m for m in (stage.pool, stage.norm) if m is not None]
            out.append(Block(f"transformers.{s - 1}.pool", "pool", s, mods, entry, layout="pit",
                             prefix_tokens=prefix, downsamples=stage.pool is not None))
        for j, blk in enumerate(stage.blocks):
            attn, mlp = _vit_branches(blk)
            name = f"transformers.{s - 1}.blocks.{j}"
            out.append(Block(f"{name}.attn", "msa", s, [blk.norm1, blk.attn, blk.ls1], on_tokens(attn),
                             shortcut=_identity, layout="pit", prefix_tokens=prefix))
            out.append(Block(f"{name}.mlp", "mlp", s, [blk.norm2, blk.mlp, blk.ls2], on_tokens(mlp),
                             shortcut=_identity, layout="pit", prefix_tokens=prefix))

    def head(state):
        return model.forward_head(model.norm(state[1]))
    head_modules = [m for m in (model.norm, model.head, model.head_dist) if isinstance(m, nn.Module)]
    out.append(Block("head", "head", len(model.transformers) + 1, head_modules, head, layout="logits"))
    return out


def _convnext_blocks(model) -> list[Block]:
    out = [Block("stem", "stem", 0, [model.stem], model.stem)]
    for s, stage in enumerate(model.stages, start=1):
        if not isinstance(stage.downsample, nn.Identity):
            out.append(Block(f"stages.{s - 1}.downsample", "pool", s, [stage.downsample], stage.downsample,
                             downsamples=True))
        for j, blk in enumerate(stage.blocks):
            out.append(Block(f"stages.{s - 1}.blocks.{j}", "conv", s, [blk], blk, shortcut=blk.shortcut))

    def head(x):
        return model.forward_head(model.norm_pre(x))
    out.append(Block("head", "head", len(model.stages) + 1, [model.norm_pre, model.head], head, layout="logits"))
    return out


def _alternet_blocks(model: AlterNet) -> list[Block]:
    # AlterNet's MSA blocks have no MLP (Park & Kim 2022; the authors' AttentionBlockB): each block,
    # Conv or MSA, is one residual block with one branch.
    out = [Block("stem", "stem", 0, [model.stem], model.stem)]
    for s, stage in enumerate(model.stages, start=1):
        for j, blk in enumerate(stage):
            kind = "msa" if isinstance(blk, AttentionBlock) else "conv"
            out.append(Block(f"stages.{s - 1}.{j}", kind, s, [blk], blk, shortcut=blk.shortcut_path,
                             downsamples=blk.shortcut is not None and _has_stride(blk.shortcut)))
    out.append(Block("head", "head", len(model.stages) + 1, [model.norm, model.fc], model.forward_head,
                     layout="logits"))
    return out


def _guess_kind(name: str, module: nn.Module, last: bool) -> str:
    types = {type(m).__name__.lower() for m in module.modules()}
    lname = name.lower()
    if last and isinstance(module, nn.Linear) or "head" in lname or "classifier" in lname or lname == "fc":
        return "head"
    if any("attention" in t for t in types) or "attn" in lname:
        return "msa"
    if any(t.startswith(("maxpool", "avgpool", "adaptiveavgpool", "patchmerging")) for t in types) and \
            not any(t.startswith("conv") for t in types):
        return "pool"
    if any(t.startswith("conv") for t in types):
        return "conv"
    if any(t == "linear" for t in types):
        return "mlp"
    return "conv"


def _generic_blocks(model: nn.Module) -> list[Block]:
    children = [(n, m) for n, m in model.named_children() if sum(1 for _ in m.parameters()) or
                not isinstance(m, (nn.Dropout, nn.Identity))]
    if not children:
        raise VitlensError(f"cannot split {type(model).__name__} into blocks: it has no sub-modules")
    out = []
    for i, (name, child) in enumerate(children):
        kind = "stem" if i == 0 else _guess_kind(name, child, i == len(children) - 1)
        out.append(Block(name, kind, 0 if i == 0 else 1, [child], child, guessed=True,
                         layout="logits" if kind == "head" else "nchw"))
    return out


def blocks(model: nn.Module) -> list[Block]:
    """The ordered blocks of MODEL (see the module docstring)."""
    # deferred: timm is heavy; `import vitlens` and the AlterNet models do without it
    from timm.models.convnext import ConvNeXt
    from timm.models.pit import PoolingVisionTransformer
    from timm.models.resnet import ResNet
    from timm.models.swin_transformer import SwinTransformer
    from timm.models.vision_transformer import VisionTransformer

    if hasattr(model, "vitlens_blocks"):  # a family that splits itself (ConvViT)
        return model.vitlens_blocks(Block)
    if isinstance(model, AlterNet):
        return _alternet_blocks(model)
    if isinstance(model, VisionTransformer):
        return _vit_blocks(model)
    if isinstance(model, ResNet):
        return _timm_resnet_blocks(model)
    if isinstance(model, SwinTransformer):
        return _swin_blocks(model)
    if isinstance(model, PoolingVisionTransformer):
        return _pit_blocks(model)
    if isinstance(model, ConvNeXt):
        return _convnext_blocks(model)
    return _generic_blocks(model)


# ----------------------------------------------------------------------------- running

def run_blocks(block_list: Sequence[Block], x: torch.Tensor, skip: Iterable[int | str] = (),
               collect: bool = False):
    """Run the blocks in order on input X; blocks named (or indexed) in SKIP lose their residual
    branch. Returns the final output, or (output, [each block's output]) with `collect=True`."""
    skip = set(skip)
    outputs = []
    state: Any = x
    for i, block in enumerate(block_list):
        state = block(state, skip=(i in skip or block.name in skip))
        if collect:
            outputs.append(state)
    return (state, outputs) if collect else state


def check_blocks(model: nn.Module, x: torch.Tensor, block_list: Sequence[Block] | None = None,
                 rtol: float = 1e-4, atol: float = 1e-5) -> tuple[bool, float]:
    """Do the blocks reproduce the model's own output on X? Returns (ok, max abs difference)."""
    block_list = blocks(model) if block_list is None else block_list
    with torch.no_grad():
        want = model(x)
        got = run_blocks(block_list, x)
    if not isinstance(got, torch.Tensor) or got.shape != want.shape:
        return False, float("inf")
    diff = (got - want).abs().max().item()
    return bool(torch.allclose(got, want, rtol=rtol, atol=atol)), diff


def feature_map(output: Any, block: Block) -> torch.Tensor | None:
    """A block's output as a (B, C, H, W) feature map; None for logits.

    Tokens become an h x w map after dropping the class/distillation tokens; a token count that is
    not a square cannot be placed on a grid and raises an error.
    """
    if block.layout == "logits":
        return None
    if block.layout == "pit":
        return output[0]
    if block.layout == "nhwc":
        return output.permute(0, 3, 1, 2)
    if block.layout == "nlc":
        tokens = output[:, block.prefix_tokens:]
        n = tokens.shape[1]
        side = math.isqrt(n)
        if side * side != n:
            raise VitlensError(f"block {block.name}: {n} patch tokens do not form a square grid")
        return tokens.transpose(1, 2).reshape(tokens.shape[0], tokens.shape[2], side, side)
    return output


def describe_blocks(model: nn.Module, input_size: Sequence[int] | None = None) -> list[dict]:
    """One row per block: index, name, kind, stage, output shape, parameter count, flags."""
    block_list = blocks(model)
    if input_size is None:
        input_size = (model.pretrained_cfg or {}).get("input_size", (3, 224, 224))
    param = next(model.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    x = torch.zeros(1, *input_size, device=device)
    with torch.no_grad():
        _, outputs = run_blocks(block_list, x, collect=True)
    rows = []
    for i, (block, out) in enumerate(zip(block_list, outputs)):
        shape = tuple(out[0].shape) if isinstance(out, tuple) else tuple(out.shape)
        rows.append(dict(index=i, name=block.name, kind=block.kind, stage=block.stage,
                         output_shape="x".join(str(d) for d in shape[1:]), params=block.num_params(),
                         skippable=block.skippable, guessed=block.guessed))
    return rows
