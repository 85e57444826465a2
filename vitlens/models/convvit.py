"""ConvViT: a ViT whose self-attention sees only a k x k neighbourhood of each position.

Park & Kim 2022 (Sec. 3, "strong locality helps optimisation"; the authors' `models/convit.py`, after
Yang et al. 2019, "Convolutional self-attention networks"; not d'Ascoli et al.'s ConViT): tokens stay an
h x w map; each position's query attends to the keys and values of its k x k neighbourhood, taken
with `F.unfold` (zero padding at the border, so a padded neighbour is a zero key with logit 0, as in
theirs). Blocks are pre-norm (LayerNorm over channels), attention then a 1x1-conv MLP, each a
residual branch with stochastic depth; the head is global average pooling, LayerNorm, Linear.
The image size is kept: padding k // 2 for odd k, and (k - 1) // 2 before / k // 2 after for even k.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from .alternet import drop_path


class LayerNorm2d(nn.LayerNorm):
    """LayerNorm over the channels of an NCHW map."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


class ConvAttention2d(nn.Module):
    """Multi-head attention over each position's KERNEL x KERNEL neighbourhood of an NCHW map."""

    def __init__(self, dim: int, heads: int, head_dim: int = 64, kernel_size: int = 3):
        super().__init__()
        self.heads, self.head_dim, self.kernel_size = heads, head_dim, kernel_size
        self.scale = head_dim ** -0.5
        inner = heads * head_dim
        self.q = nn.Conv2d(dim, inner, 1, bias=False)
        self.kv = nn.Conv2d(dim, 2 * inner, 1, bias=False)
        self.proj = nn.Conv2d(inner, dim, 1)

    def neighbourhoods(self, t: torch.Tensor) -> torch.Tensor:
        """(B, heads*head_dim, H, W) -> (B, heads, H*W, k*k, head_dim): each position's neighbours."""
        k = self.kernel_size
        before, after = (k - 1) // 2, k // 2
        padded = F.pad(t, (before, after, before, after))
        cols = F.unfold(padded, kernel_size=k)  # (B, C*k*k, H*W)
        b, _, n = cols.shape
        return cols.view(b, self.heads, self.head_dim, k * k, n).permute(0, 1, 4, 3, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, h, w = x.shape
        q = self.q(x).view(b, self.heads, self.head_dim, h * w).transpose(2, 3)  # (B, heads, N, d)
        key, value = self.kv(x).chunk(2, dim=1)
        key, value = self.neighbourhoods(key), self.neighbourhoods(value)  # (B, heads, N, k*k, d)
        logits = torch.einsum("bhnd,bhnwd->bhnw", q, key) * self.scale
        out = torch.einsum("bhnw,bhnwd->bhnd", logits.softmax(dim=-1), value)
        return self.proj(out.transpose(2, 3).reshape(b, -1, h, w))


class ConvViTBlock(nn.Module):
    """x + attn(LN(x)), then x + mlp(LN(x)); `attention_branch` / `mlp_branch` are the two residual
    branches (the blocks of the paper's depth plots)."""

    def __init__(self, dim: int, heads: int, head_dim: int, mlp_ratio: float, kernel_size: int, drop_path: float):
        super().__init__()
        self.norm1, self.norm2 = LayerNorm2d(dim), LayerNorm2d(dim)
        self.attn = ConvAttention2d(dim, heads, head_dim, kernel_size)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(nn.Conv2d(dim, hidden, 1), nn.GELU(), nn.Conv2d(hidden, dim, 1))
        self.drop_path = drop_path

    def attention_branch(self, x: torch.Tensor) -> torch.Tensor:
        return x + drop_path(self.attn(self.norm1(x)), self.drop_path, self.training)

    def mlp_branch(self, x: torch.Tensor) -> torch.Tensor:
        return x + drop_path(self.mlp(self.norm2(x)), self.drop_path, self.training)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.mlp_branch(self.attention_branch(x))


class ConvViT(nn.Module):
    """Patch embedding (a strided conv) plus a learned absolute position embedding, DEPTH blocks of
    convolutional attention, then GAP, LayerNorm and a linear head. Stochastic depth rises linearly
    over the blocks to DROP_PATH_RATE (as the authors' `sd * i / (depth - 1)`)."""

    def __init__(self, img_size: int = 32, patch_size: int = 2, in_chans: int = 3, num_classes: int = 10,
                 embed_dim: int = 192, depth: int = 12, num_heads: int = 3, head_dim: int = 64,
                 mlp_ratio: float = 4.0, kernel_size: int = 3, drop_path_rate: float = 0.0):
        super().__init__()
        if not 1 <= kernel_size <= img_size // patch_size:
            raise ValueError(f"kernel_size must be from 1 to the token map's side {img_size // patch_size}")
        side = img_size // patch_size
        self.num_classes, self.kernel_size = num_classes, kernel_size
        self.patch_embed = nn.Conv2d(in_chans, embed_dim, patch_size, stride=patch_size)
        self.pos_embed = nn.Parameter(torch.randn(1, embed_dim, side, side) * 0.02)
        rates = [drop_path_rate * i / max(depth - 1, 1) for i in range(depth)]
        self.blocks = nn.ModuleList(ConvViTBlock(embed_dim, num_heads, head_dim, mlp_ratio, kernel_size, r)
                                    for r in rates)
        self.norm = nn.LayerNorm(embed_dim)
        self.head = nn.Linear(embed_dim, num_classes)

    def forward_stem(self, x: torch.Tensor) -> torch.Tensor:
        return self.patch_embed(x) + self.pos_embed

    def forward_head(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.norm(x.mean(dim=(2, 3))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.forward_stem(x)
        for blk in self.blocks:
            x = blk(x)
        return self.forward_head(x)

    def vitlens_blocks(self, block_type):
        """The paper's blocks (`vitlens.models.blocks`): stem, then an msa and an mlp block per layer, head."""
        out = [block_type("stem", "stem", 0, [self.patch_embed], self.forward_stem, extra_params=[self.pos_embed])]
        for j, blk in enumerate(self.blocks):
            out.append(block_type(f"blocks.{j}.attn", "msa", 1, [blk.norm1, blk.attn], blk.attention_branch,
                                  shortcut=lambda x: x))
            out.append(block_type(f"blocks.{j}.mlp", "mlp", 1, [blk.norm2, blk.mlp], blk.mlp_branch,
                                  shortcut=lambda x: x))
        out.append(block_type("head", "head", 2, [self.norm, self.head], self.forward_head, layout="logits"))
        return out
