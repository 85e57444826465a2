"""AlterNet (Alter-ResNet) as Park & Kim built it ("How Do Vision Transformers Work?", ICLR 2022,
Sec. 4 and Fig. 11; the authors' code: github.com/xxxnell/how-do-vits-work, branch "transformer",
models/alternet.py with models/attentions.py, models/preresnet_dnn_block.py and
models/classifier_block.py). This is an independent re-implementation that reproduces their
architecture, parameter for parameter, under vitlens' module names; `convert_authors_state_dict`
maps a state_dict saved by their code onto these names.

The design, as the authors' code builds it:
  * a pre-activation ResNet (He et al. 2016, "Identity Mappings in Deep Residual Networks"):
    ResNet-18 style basic blocks or ResNet-50 style bottlenecks, widths 64/128/256/512;
  * in each stage of n blocks with m MSA blocks, Conv (C) and MSA (M) blocks alternate from the
    end of the stage: ``[C] * (n - 2m) + [C, M] * m``. The first block of a stage is always a
    Conv block and is the one that downsamples (stride 2 in stages 2-4). AlterNet-50: blocks
    (3, 4, 6, 4) with MSA (0, 1, 3, 2), so stage 3 is C M C M C M and stage 4 is C M C M;
    AlterNet-18: blocks (2, 2, 2, 2) with MSA (0, 1, 1, 1). (The authors' list is cut to n blocks
    when 2m > n, which silently drops MSAs; vitlens rejects such a stage instead.)
  * an MSA block (the authors' AttentionBlockB / AttentionBasicBlockB with LocalAttention and
    Attention2d) is a pre-activation bottleneck with no MLP: BN-GELU, a 1x1 conv (no bias) down to
    input-channels / expansion, BN, then multi-head self-attention inside non-overlapping w x w
    windows (q and kv by 1x1 convs without bias, a 1x1 output conv with bias) back to the block's
    output width, with one learned (2w-1) x (2w-1) relative position table per block shared by
    all heads; drop-path on the branch, plus the shortcut (identity, or a 1x1 conv of the
    activated input when the shape changes). Heads (3, 6, 12, 24) per stage, 64 channels a head;
  * stem (the authors' StemB, pre-activation, so no BN/ReLU): ImageNet 7x7/2 conv + 3x3/2
    max-pool; CIFAR 3x3/1 conv, no pool;
  * classifier (the authors' BNGAPBlock): BN-ReLU, global average pool, linear;
  * stochastic depth rising linearly from 0 to `drop_path_rate` over all blocks (default 0).

Windows: the authors use w = 7, which needs every stage's map to divide by 7 (224x224 ImageNet
inputs: 56, 28, 14, 7). On 32x32 CIFAR inputs their window 7 fails (maps 32, 16, 8, 4), so the
CIFAR models here keep w = 4. For map sizes the authors' code rejects (not a multiple of w) vitlens
pads the map to whole windows and masks the padded keys out of the softmax; on any size that
divides by w this is exactly the authors' computation.

Parameter counts (equal to the authors' code, instantiated): ImageNet (1000 classes) AlterNet-50
35,915,038, AlterNet-18 9,968,803; CIFAR stem with window 4: AlterNet-18 (10 classes) 9,452,893,
AlterNet-50 (100 classes) 34,062,538. With ``msa=(0, 0, ...)`` the network is a plain
pre-activation ResNet, which is how the demo_resnet model is built.
"""
from __future__ import annotations

import re
from typing import Mapping, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..errors import VitlensError


def drop_path(x: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    """Stochastic depth (Huang et al. 2016): drop the whole branch for a sample with probability p."""
    if p <= 0.0 or not training:
        return x
    keep = 1.0 - p
    mask = x.new_empty((x.shape[0],) + (1,) * (x.dim() - 1)).bernoulli_(keep)
    return x * mask / keep


class PreActBasicBlock(nn.Module):
    """BN-ReLU-conv3x3 (stride), BN-ReLU-conv3x3, with an identity or 1x1 projection shortcut; the
    projection sees the activated input (He et al. 2016; the authors' preresnet_dnn_block.BasicBlock)."""

    expansion = 1

    def __init__(self, in_ch: int, width: int, stride: int = 1, drop_path: float = 0.0):
        super().__init__()
        out_ch = width * self.expansion
        self.drop_path = drop_path
        self.bn1 = nn.BatchNorm2d(in_ch)
        self.conv1 = nn.Conv2d(in_ch, width, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, out_ch, 3, 1, 1, bias=False)
        self.shortcut = None
        if stride != 1 or in_ch != out_ch:
            self.shortcut = nn.Conv2d(in_ch, out_ch, 1, stride, bias=False)

    def _act(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn1(x))

    def shortcut_path(self, x: torch.Tensor) -> torch.Tensor:
        """The block's output with its residual branch removed (used by lesion studies)."""
        return x if self.shortcut is None else self.shortcut(self._act(x))

    def branch(self, a: torch.Tensor) -> torch.Tensor:
        """The residual branch, from the activated input a = act(bn1(x))."""
        return self.conv2(F.relu(self.bn2(self.conv1(a))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self._act(x)
        skip = x if self.shortcut is None else self.shortcut(a)
        return drop_path(self.branch(a), self.drop_path, self.training) + skip

    def extra_repr(self) -> str:
        return f"drop_path={self.drop_path}" if self.drop_path else ""


class PreActBottleneck(PreActBasicBlock):
    """BN-ReLU-conv1x1, BN-ReLU-conv3x3 (stride), BN-ReLU-conv1x1 (x4 channels); the authors'
    preresnet_dnn_block.Bottleneck."""

    expansion = 4

    def __init__(self, in_ch: int, width: int, stride: int = 1, drop_path: float = 0.0):
        nn.Module.__init__(self)
        out_ch = width * self.expansion
        self.drop_path = drop_path
        self.bn1 = nn.BatchNorm2d(in_ch)
        self.conv1 = nn.Conv2d(in_ch, width, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, out_ch, 1, bias=False)
        self.shortcut = None
        if stride != 1 or in_ch != out_ch:
            self.shortcut = nn.Conv2d(in_ch, out_ch, 1, stride, bias=False)

    def branch(self, a: torch.Tensor) -> torch.Tensor:
        out = self.conv2(F.relu(self.bn2(self.conv1(a))))
        return self.conv3(F.relu(self.bn3(out)))


def relative_position_index(window: int) -> torch.Tensor:
    """(w*w, w*w, 2) indices into a (2w-1, 2w-1) table: for query i and key j in a w x w window
    (row-major positions), the key-minus-query offset (dy, dx) shifted by w - 1."""
    coords = torch.stack(torch.meshgrid(torch.arange(window), torch.arange(window), indexing="ij"), -1)
    coords = coords.reshape(-1, 2)
    return coords[None, :, :] - coords[:, None, :] + (window - 1)


class WindowAttention(nn.Module):
    """Multi-head self-attention inside non-overlapping w x w windows of an NCHW map (the authors'
    LocalAttention + Attention2d): q and kv are 1x1 convs without bias, heads x head_dim wide; the
    output is a 1x1 conv (with bias) to `dim_out`. One learned (2w-1) x (2w-1) relative position
    bias, shared by all heads, is added to the scaled logits."""

    def __init__(self, dim_in: int, dim_out: int, heads: int, window: int, head_dim: int = 64):
        super().__init__()
        self.heads, self.window, self.head_dim = heads, window, head_dim
        self.scale = head_dim ** -0.5
        inner = heads * head_dim
        self.q = nn.Conv2d(dim_in, inner, 1, bias=False)
        self.kv = nn.Conv2d(dim_in, 2 * inner, 1, bias=False)
        self.proj = nn.Conv2d(inner, dim_out, 1)
        self.relative_position_bias = nn.Parameter(torch.randn(2 * window - 1, 2 * window - 1) * 0.02)
        self.register_buffer("relative_position_index", relative_position_index(window), persistent=False)

    def bias(self) -> torch.Tensor:
        """The (w*w, w*w) relative position bias added to every head's logits."""
        idx = self.relative_position_index
        return self.relative_position_bias[idx[..., 0], idx[..., 1]]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, h, w = x.shape
        win = self.window
        pad_h, pad_w = (-h) % win, (-w) % win
        if pad_h or pad_w:  # sizes the authors' code rejects: pad to whole windows, mask padded keys
            x = F.pad(x, (0, pad_w, 0, pad_h))
        hp, wp = h + pad_h, w + pad_w
        nh, nw, n = hp // win, wp // win, win * win

        def windows(t: torch.Tensor) -> torch.Tensor:  # (b, c, hp, wp) -> (b*nh*nw, c, win, win)
            c = t.shape[1]
            t = t.reshape(b, c, nh, win, nw, win).permute(0, 2, 4, 1, 3, 5)
            return t.reshape(b * nh * nw, c, win, win)

        def heads(t: torch.Tensor) -> torch.Tensor:  # (B, heads*d, win, win) -> (B, heads, n, d)
            return t.reshape(t.shape[0], self.heads, self.head_dim, n).transpose(-1, -2)

        xw = windows(x)
        q = heads(self.q(xw))
        k, v = (heads(t) for t in self.kv(xw).chunk(2, dim=1))
        # Plain softmax attention (not fused SDPA) keeps double backward available on every device,
        # which the Hessian analyses need.
        attn = (q @ k.transpose(-2, -1)) * self.scale + self.bias()
        if pad_h or pad_w:
            valid = torch.zeros(1, 1, hp, wp, dtype=torch.bool, device=x.device)
            valid[..., :h, :w] = True
            valid = valid.reshape(1, 1, nh, win, nw, win).permute(0, 2, 4, 1, 3, 5).reshape(1, nh * nw, n)
            attn = attn.reshape(b, nh * nw, self.heads, n, n)
            attn = attn.masked_fill(~valid[:, :, None, None, :], float("-inf")).reshape(-1, self.heads, n, n)
        out = attn.softmax(dim=-1) @ v  # (B, heads, n, d)
        out = out.transpose(-1, -2).reshape(-1, self.heads * self.head_dim, win, win)
        out = self.proj(out)
        c = out.shape[1]
        out = out.reshape(b, nh, nw, c, win, win).permute(0, 3, 1, 4, 2, 5).reshape(b, c, hp, wp)
        return out[:, :, :h, :w]

    def extra_repr(self) -> str:
        return f"heads={self.heads}, head_dim={self.head_dim}, window={self.window}"


class AttentionBlock(nn.Module):
    """The paper's MSA block (the authors' AttentionBlockB; AttentionBasicBlockB with expansion 1):
    x + drop_path(MSA(BN(conv1x1(GELU(BN(x)))))); no MLP. The 1x1 conv maps the input channels to
    in_ch / expansion; the windowed MSA maps them to the block's output width (width x expansion)."""

    def __init__(self, in_ch: int, width: int, heads: int, window: int, head_dim: int = 64,
                 expansion: int = 1, drop_path: float = 0.0):
        super().__init__()
        out_ch = width * expansion
        inner = in_ch // expansion
        self.expansion, self.drop_path = expansion, drop_path
        self.bn1 = nn.BatchNorm2d(in_ch)
        self.conv1 = nn.Conv2d(in_ch, inner, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(inner)
        self.attn = WindowAttention(inner, out_ch, heads, window, head_dim)
        self.shortcut = None
        if in_ch != out_ch:
            self.shortcut = nn.Conv2d(in_ch, out_ch, 1, bias=False)

    def _act(self, x: torch.Tensor) -> torch.Tensor:
        return F.gelu(self.bn1(x))

    shortcut_path = PreActBasicBlock.shortcut_path

    def branch(self, a: torch.Tensor) -> torch.Tensor:
        """The residual (MSA) branch, from the activated input a = GELU(bn1(x))."""
        return self.attn(self.bn2(self.conv1(a)))

    forward = PreActBasicBlock.forward
    extra_repr = PreActBasicBlock.extra_repr


def stage_layout(depth: int, msa: int) -> list[str]:
    """The block kinds of one stage, Conv ("C") and MSA ("M") alternating from the end:
    ``[C] * (depth - 2 msa) + [C, M] * msa`` (the authors' AlterNet._make_layer)."""
    if depth < 1 or msa < 0 or 2 * msa > depth:
        raise VitlensError(
            f"AlterNet: a stage of {depth} blocks holds 0 to {max(depth, 0) // 2} MSA blocks, got {msa}: "
            "each MSA block needs at least one conv block before it (the first conv block downsamples)")
    return ["C"] * (depth - 2 * msa) + ["C", "M"] * msa


class AlterNet(nn.Module):
    """Pre-activation ResNet with Conv and MSA blocks alternating from the end of each stage
    (Park & Kim 2022, Fig. 11; see the module docstring for the exact design).

    Args:
        depths: blocks per stage (Conv and MSA together).
        msa: MSA blocks per stage; stage s is ``[C] * (depths[s] - 2 msa[s]) + [C, M] * msa[s]``.
        heads: attention heads per stage (more in late stages).
        widths: base widths per stage (x4 output channels for bottleneck blocks).
        window: attention window (7 for 224x224 ImageNet inputs as the authors use; 4 for 32x32
            CIFAR inputs, on which the authors' window 7 fails).
        block: "basic" (ResNet-18 style) or "bottleneck" (ResNet-50 style).
        stem: "cifar" (3x3 conv, stride 1) or "imagenet" (7x7 conv stride 2 + 3x3 max-pool); no
            BN/ReLU in either (pre-activation).
        stem_width: stem output channels (default widths[0]; the authors use 64).
        head_dim: width of each attention head (the authors use 64).
        drop_path_rate: stochastic depth of the last block (linear from 0 over all blocks).
        img_size: input size the data pipeline should use (the network itself takes any size).
    """

    def __init__(self, depths: Sequence[int] = (2, 2, 2, 2), msa: Sequence[int] = (0, 1, 1, 1),
                 heads: Sequence[int] = (3, 6, 12, 24), widths: Sequence[int] = (64, 128, 256, 512),
                 window: int = 4, block: str = "basic", stem: str = "cifar", num_classes: int = 10,
                 in_chans: int = 3, stem_width: int | None = None, head_dim: int = 64,
                 drop_path_rate: float = 0.0, img_size: int | None = None):
        # img_size only sets the data config (see registry); the network works at any size.
        super().__init__()
        if not (len(depths) == len(msa) == len(heads) == len(widths)):
            raise VitlensError("AlterNet: depths, msa, heads and widths need one entry per stage")
        if block not in ("basic", "bottleneck"):
            raise VitlensError(f"AlterNet: block must be 'basic' or 'bottleneck', got '{block}'")
        if window < 1:
            raise VitlensError(f"AlterNet: window must be a positive integer, got {window}")
        block_cls = PreActBasicBlock if block == "basic" else PreActBottleneck
        layouts = []
        for i, (depth, n_msa) in enumerate(zip(depths, msa)):
            try:
                layouts.append(stage_layout(depth, n_msa))
            except VitlensError as err:
                raise VitlensError(str(err).replace("AlterNet: a stage", f"AlterNet: stage {i}", 1)) from None
        stem_width = stem_width or widths[0]
        if stem == "cifar":
            self.stem = nn.Conv2d(in_chans, stem_width, 3, 1, 1, bias=False)
        elif stem == "imagenet":
            self.stem = nn.Sequential(nn.Conv2d(in_chans, stem_width, 7, 2, 3, bias=False),
                                      nn.MaxPool2d(3, 2, 1))
        else:
            raise VitlensError(f"AlterNet: stem must be 'cifar' or 'imagenet', got '{stem}'")
        total = sum(depths)
        rates = [drop_path_rate * j / max(total - 1, 1) for j in range(total)]
        self.stages = nn.ModuleList()
        channels, j_global = stem_width, 0
        for i, (layout, n_heads, width) in enumerate(zip(layouts, heads, widths)):
            layers = []
            for j, kind in enumerate(layout):
                dp = rates[j_global]
                j_global += 1
                if kind == "C":
                    layers.append(block_cls(channels, width, stride=2 if (i > 0 and j == 0) else 1, drop_path=dp))
                else:
                    layers.append(AttentionBlock(channels, width, n_heads, window, head_dim,
                                                 expansion=block_cls.expansion, drop_path=dp))
                channels = width * block_cls.expansion
            self.stages.append(nn.Sequential(*layers))
        self.num_features = channels
        self.norm = nn.BatchNorm2d(channels)  # pre-activation nets end with BN-ReLU before pooling
        self.fc = nn.Linear(channels, num_classes)
        self.num_classes = num_classes

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        for stage in self.stages:
            x = stage(x)
        return x

    def forward_head(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.norm(x))
        return self.fc(x.mean(dim=(2, 3)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


# ----------------------------------------------------------------------------- authors' checkpoints

_CONV_KEYS = {  # authors' preresnet_dnn_block names -> vitlens names, inside one conv block
    "bn": "bn1", "conv1": "conv1", "conv2.0": "bn2", "conv2.2": "conv2", "conv3.0": "bn3",
    "conv3.2": "conv3", "shortcut.0": "shortcut",
}
_MSA_KEYS = {  # authors' AttentionBlockB names -> vitlens names, inside one MSA block
    "norm1": "bn1", "conv": "conv1", "norm2": "bn2", "attn.attn.to_q": "attn.q", "attn.attn.to_kv": "attn.kv",
    "attn.attn.to_out.0": "attn.proj", "attn.pos_embedding": "attn.relative_position_bias",
    "shortcut.0": "shortcut",
}
_BLOCK_KEY = re.compile(r"layer([1-9][0-9]*)\.([0-9]+)\.(.+)")
_PARAM_SUFFIXES = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")


def is_authors_state_dict(state: Mapping[str, object]) -> bool:
    """Does STATE look like a state_dict of the authors' AlterNet (models/alternet.py)?"""
    return any(k.startswith("layer0.layer0.") for k in state) and any(k.startswith("classifier.0.") for k in state)


def convert_authors_state_dict(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename the keys of a state_dict saved by the authors' AlterNet (github.com/xxxnell/
    how-do-vits-work, models/alternet.py) to vitlens' AlterNet names; tensors are unchanged.

    layer0.layer0.0 -> stem (CIFAR 3x3) or stem.0 (ImageNet 7x7); layer{s}.{j} -> stages.{s-1}.{j},
    with the block's inner names mapped (conv blocks: bn, conv2.0, conv2.2, ... -> bn1, bn2, conv2,
    ...; MSA blocks: norm1, conv, norm2, attn.attn.to_q/to_kv/to_out.0, attn.pos_embedding -> bn1,
    conv1, bn2, attn.q/kv/proj, attn.relative_position_bias); classifier.0.bn/dense -> norm/fc.
    Raises VitlensError on a key it does not know. "module." prefixes should be stripped first.
    """
    blocks_with_attn = {m.group(1, 2) for k in state if (m := _BLOCK_KEY.fullmatch(k)) and
                        m.group(3).startswith(("attn.", "norm1."))}
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        new = None
        if key.startswith("layer0.layer0."):
            rest = key[len("layer0.layer0."):]
            if rest.split(".", 1)[0] == "0" and rest.count(".") == 1:
                kernel = value.shape[-1] if getattr(value, "dim", lambda: 0)() == 4 else None
                new = ("stem.0." if kernel == 7 else "stem.") + rest.split(".", 1)[1]
        elif key.startswith("classifier.0."):
            rest = key[len("classifier.0."):]
            head, _, suffix = rest.partition(".")
            if head in ("bn", "dense") and suffix in _PARAM_SUFFIXES:
                new = ("norm." if head == "bn" else "fc.") + suffix
        elif (m := _BLOCK_KEY.fullmatch(key)) is not None:
            stage, j, rest = m.groups()
            table = _MSA_KEYS if (stage, j) in blocks_with_attn else _CONV_KEYS
            module, _, suffix = rest.rpartition(".")
            if rest == "attn.pos_embedding":
                module, suffix = rest, ""
            if module in table:
                name = table[module] + (f".{suffix}" if suffix else "")
                new = f"stages.{int(stage) - 1}.{j}.{name}"
        if new is None:
            raise VitlensError(f"convert_authors_state_dict: unknown key '{key}' (not the authors' AlterNet)")
        out[new] = value
    return out
