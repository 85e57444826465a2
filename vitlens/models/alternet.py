"""AlterNet (Alter-ResNet), written from the rules in Park & Kim, ICLR 2022, Sec. 4 and Fig. 11.

The rules, as the paper states them:
  * start from a pre-activation ResNet (He et al. 2016, "Identity Mappings in Deep Residual Networks");
  * in a stage, the *last* blocks are multi-head self-attention (MSA) blocks, so that Conv and MSA
    alternate over the network and each stage ends with an MSA;
  * MSAs in late stages get more heads (and the stages are wider), since late-stage MSAs matter most;
  * the MSAs are local (windowed) with a relative position bias, as in Swin (Liu et al. 2021).

An MSA block here is the usual pre-norm transformer pair applied to a feature map: an attention
branch (LayerNorm -> windowed MSA) and an MLP branch (LayerNorm -> 1x1 MLP), each with its own
residual connection. `vitlens.blocks()` splits the pair into an `msa` and an `mlp` block, as it does
for ViTs. With `msa=(0, 0, ...)` the network is a plain pre-activation ResNet, which is how the
mini ResNet demo model is built.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..errors import VitlensError


class PreActBasicBlock(nn.Module):
    """BN-ReLU-conv3x3, BN-ReLU-conv3x3 with an identity (or 1x1 projection) shortcut."""

    expansion = 1

    def __init__(self, in_ch: int, width: int, stride: int = 1):
        super().__init__()
        out_ch = width * self.expansion
        self.bn1 = nn.BatchNorm2d(in_ch)
        self.conv1 = nn.Conv2d(in_ch, width, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, out_ch, 3, 1, 1, bias=False)
        self.shortcut = None
        if stride != 1 or in_ch != out_ch:
            self.shortcut = nn.Conv2d(in_ch, out_ch, 1, stride, bias=False)

    def shortcut_path(self, x: torch.Tensor) -> torch.Tensor:
        """The block's output with its residual branch removed (used by lesion studies)."""
        if self.shortcut is None:
            return x
        # As in He et al. 2016 (pre-activation), a projection shortcut sees the activated input.
        return self.shortcut(F.relu(self.bn1(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(x))
        skip = x if self.shortcut is None else self.shortcut(out)
        out = self.conv1(out)
        out = self.conv2(F.relu(self.bn2(out)))
        return out + skip


class PreActBottleneck(nn.Module):
    """BN-ReLU-conv1x1, BN-ReLU-conv3x3 (stride), BN-ReLU-conv1x1 (x4 channels)."""

    expansion = 4

    def __init__(self, in_ch: int, width: int, stride: int = 1):
        super().__init__()
        out_ch = width * self.expansion
        self.bn1 = nn.BatchNorm2d(in_ch)
        self.conv1 = nn.Conv2d(in_ch, width, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, out_ch, 1, bias=False)
        self.shortcut = None
        if stride != 1 or in_ch != out_ch:
            self.shortcut = nn.Conv2d(in_ch, out_ch, 1, stride, bias=False)

    shortcut_path = PreActBasicBlock.shortcut_path

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(x))
        skip = x if self.shortcut is None else self.shortcut(out)
        out = self.conv1(out)
        out = self.conv2(F.relu(self.bn2(out)))
        out = self.conv3(F.relu(self.bn3(out)))
        return out + skip


def relative_position_index(window: int) -> torch.Tensor:
    """Index into a (2w-1)^2 bias table for every pair of positions in a w x w window (Swin)."""
    coords = torch.stack(torch.meshgrid(torch.arange(window), torch.arange(window), indexing="ij"))
    coords = coords.flatten(1)  # 2, w*w
    rel = coords[:, :, None] - coords[:, None, :]  # 2, w*w, w*w
    rel = rel + (window - 1)
    return rel[0] * (2 * window - 1) + rel[1]


class WindowAttention(nn.Module):
    """Multi-head self-attention inside non-overlapping w x w windows, with a learned relative
    position bias (Liu et al. 2021). Input and output are channels-last maps (B, H, W, C).

    The attention width is heads x head_dim (projected in and out of the block's channels), so
    stages with more heads also attend with more width, as the paper's AlterNet does."""

    def __init__(self, dim: int, heads: int, window: int, head_dim: int = 64):
        super().__init__()
        self.heads, self.window, self.head_dim = heads, window, head_dim
        self.scale = head_dim ** -0.5
        self.qkv = nn.Linear(dim, 3 * heads * head_dim)
        self.proj = nn.Linear(heads * head_dim, dim)
        self.relative_position_bias_table = nn.Parameter(torch.zeros((2 * window - 1) ** 2, heads))
        nn.init.trunc_normal_(self.relative_position_bias_table, std=0.02)
        self.register_buffer("relative_position_index", relative_position_index(window), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, h, w, c = x.shape
        win = self.window
        pad_h, pad_w = (-h) % win, (-w) % win
        if pad_h or pad_w:
            # Pad to whole windows; padded positions attend like zeros and are cropped off below.
            x = F.pad(x, (0, 0, 0, pad_w, 0, pad_h))
        hp, wp = h + pad_h, w + pad_w
        windows = x.reshape(b, hp // win, win, wp // win, win, c).permute(0, 1, 3, 2, 4, 5)
        windows = windows.reshape(-1, win * win, c)
        n = windows.shape[0]
        qkv = self.qkv(windows).reshape(n, win * win, 3, self.heads, self.head_dim)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)
        # Plain softmax attention (not fused SDPA) keeps double backward available on every device,
        # which the Hessian analyses need.
        attn = (q * self.scale) @ k.transpose(-2, -1)
        bias = self.relative_position_bias_table[self.relative_position_index.reshape(-1)]
        attn = attn + bias.reshape(win * win, win * win, self.heads).permute(2, 0, 1)
        out = (attn.softmax(dim=-1) @ v).transpose(1, 2).reshape(n, win * win, self.heads * self.head_dim)
        out = self.proj(out)
        out = out.reshape(b, hp // win, wp // win, win, win, c).permute(0, 1, 3, 2, 4, 5)
        return out.reshape(b, hp, wp, c)[:, :h, :w]


class AttentionBlock(nn.Module):
    """Pre-norm MSA + MLP pair on an NCHW feature map; each branch has its own residual."""

    def __init__(self, dim: int, heads: int, window: int, mlp_ratio: float = 4.0, head_dim: int = 64):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = WindowAttention(dim, heads, window, head_dim)
        self.norm2 = nn.LayerNorm(dim)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))

    def attn_branch(self, x: torch.Tensor) -> torch.Tensor:
        y = self.attn(self.norm1(x.permute(0, 2, 3, 1)))
        return y.permute(0, 3, 1, 2)

    def mlp_branch(self, x: torch.Tensor) -> torch.Tensor:
        y = self.mlp(self.norm2(x.permute(0, 2, 3, 1)))
        return y.permute(0, 3, 1, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn_branch(x)
        return x + self.mlp_branch(x)


class AlterNet(nn.Module):
    """Pre-activation ResNet whose stages end in MSA blocks (Park & Kim 2022, Fig. 11).

    Args:
        depths: blocks per stage (Conv and MSA together).
        msa: how many of the last blocks of each stage are MSA blocks.
        heads: attention heads per stage (more in late stages).
        widths: base widths per stage (x4 for bottleneck blocks).
        window: attention window (4 for 32x32 CIFAR inputs, 7 for 224x224 ImageNet inputs).
        mlp_ratio: MLP hidden width / channels (default 4 for basic blocks, 1 for bottlenecks).
        head_dim: width of each attention head (attention width = heads x head_dim).
        block: "basic" (ResNet-18 style) or "bottleneck" (ResNet-50 style).
        stem: "cifar" (3x3 conv, stride 1) or "imagenet" (7x7 conv stride 2 + 3x3 max-pool).
        img_size: input size the data pipeline should use (the network itself takes any size).
    """

    def __init__(self, depths: Sequence[int] = (2, 2, 2, 2), msa: Sequence[int] = (0, 1, 1, 1),
                 heads: Sequence[int] = (3, 6, 12, 24), widths: Sequence[int] = (64, 128, 256, 512),
                 window: int = 4, block: str = "basic", stem: str = "cifar", num_classes: int = 10,
                 in_chans: int = 3, stem_width: int | None = None, mlp_ratio: float | None = None,
                 head_dim: int = 64, img_size: int | None = None):
        # img_size only sets the data config (see registry); the network works at any size.
        super().__init__()
        if not (len(depths) == len(msa) == len(heads) == len(widths)):
            raise VitlensError("AlterNet: depths, msa, heads and widths need one entry per stage")
        if block not in ("basic", "bottleneck"):
            raise VitlensError(f"AlterNet: block must be 'basic' or 'bottleneck', got '{block}'")
        block_cls = PreActBasicBlock if block == "basic" else PreActBottleneck
        if mlp_ratio is None:  # bottleneck channels are already 4x the width: keep the MLP as wide
            mlp_ratio = 4.0 if block == "basic" else 1.0
        stem_width = stem_width or widths[0]
        if stem == "cifar":
            self.stem = nn.Conv2d(in_chans, stem_width, 3, 1, 1, bias=False)
        elif stem == "imagenet":
            self.stem = nn.Sequential(
                nn.Conv2d(in_chans, stem_width, 7, 2, 3, bias=False), nn.BatchNorm2d(stem_width),
                nn.ReLU(inplace=False), nn.MaxPool2d(3, 2, 1))
        else:
            raise VitlensError(f"AlterNet: stem must be 'cifar' or 'imagenet', got '{stem}'")
        self.stages = nn.ModuleList()
        channels = stem_width
        for i, (depth, n_msa, n_heads, width) in enumerate(zip(depths, msa, heads, widths)):
            if n_msa > depth or (i > 0 and n_msa >= depth):
                raise VitlensError(
                    f"AlterNet: stage {i} has {depth} blocks and {n_msa} MSA blocks; a stage needs "
                    "at least one conv block to downsample (stage 0: msa <= depth)")
            layers = []
            for j in range(depth - n_msa):
                layers.append(block_cls(channels, width, stride=2 if (i > 0 and j == 0) else 1))
                channels = width * block_cls.expansion
            for _ in range(n_msa):
                layers.append(AttentionBlock(channels, n_heads, window, mlp_ratio, head_dim))
            self.stages.append(nn.Sequential(*layers))
        self.num_features = channels
        self.norm = nn.BatchNorm2d(channels)  # pre-activation nets end with BN-ReLU before pooling
        self.fc = nn.Linear(channels, num_classes)
        self.num_classes = num_classes

    def forward_head(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.norm(x))
        return self.fc(x.mean(dim=(2, 3)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        for stage in self.stages:
            x = stage(x)
        return self.forward_head(x)
