"""ConvViT (Park & Kim 2022, the authors' models/convit.py): attention restricted to each position's
k x k neighbourhood, checked against a brute-force loop over positions and neighbours; ViT pooling
variants (timm's global_pool) build, split into blocks and train."""
import math

import pytest
import torch
import torch.nn.functional as F

from vitlens.models import blocks, check_blocks, load_model
from vitlens.models.convvit import ConvAttention2d


def brute_force(attn: ConvAttention2d, x: torch.Tensor) -> torch.Tensor:
    """Each position's query against the keys of its k x k neighbourhood, one position at a time;
    a neighbour outside the map is a zero key and a zero value (the authors' zero-padded unfold)."""
    b, _, h, w = x.shape
    k, heads, d = attn.kernel_size, attn.heads, attn.head_dim
    q = attn.q(x).view(b, heads, d, h, w)
    key, value = (t.view(b, heads, d, h, w) for t in attn.kv(x).chunk(2, dim=1))
    before = (k - 1) // 2
    out = torch.zeros(b, heads, d, h, w, dtype=torch.float64)
    for i in range(h):
        for j in range(w):
            logits, values = [], []
            for di in range(k):
                for dj in range(k):
                    y, z = i - before + di, j - before + dj
                    inside = 0 <= y < h and 0 <= z < w
                    kv = (key[..., y, z], value[..., y, z]) if inside else (torch.zeros(b, heads, d),) * 2
                    logits.append((q[..., i, j].double() * kv[0].double()).sum(-1) / math.sqrt(d))
                    values.append(kv[1].double())
            weights = torch.stack(logits, -1).softmax(-1)  # (b, heads, k*k)
            out[..., i, j] = torch.einsum("bhw,bhwd->bhd", weights, torch.stack(values, -2))
    return F.conv2d(out.reshape(b, heads * d, h, w), attn.proj.weight.double(), attn.proj.bias.double()).float()


@pytest.mark.parametrize("kernel", [1, 3, 4, 5])
def test_conv_attention_equals_a_brute_force_neighbourhood_loop(kernel):
    torch.manual_seed(kernel)
    attn = ConvAttention2d(dim=12, heads=2, head_dim=5, kernel_size=kernel)
    x = torch.randn(2, 12, 6, 5)
    with torch.no_grad():
        expected = brute_force(attn, x)
        got = attn(x)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)


def test_a_1x1_neighbourhood_attends_only_to_itself():
    torch.manual_seed(0)
    attn = ConvAttention2d(dim=8, heads=1, head_dim=8, kernel_size=1)
    x = torch.randn(1, 8, 4, 4)
    with torch.no_grad():  # one neighbour, weight 1: out = proj(v)
        v = attn.kv(x).chunk(2, dim=1)[1]
        torch.testing.assert_close(attn(x), attn.proj(v))


@pytest.mark.parametrize("kernel", [3, 5, 8])
def test_convvit_builds_splits_into_blocks_and_trains(kernel):
    model = load_model("convvit_demo", kernel_size=kernel)
    x = torch.randn(4, 3, 32, 32)
    assert check_blocks(model, x)[0]  # running the blocks in order gives the model's own output
    kinds = [b.kind for b in blocks(model)]
    assert kinds == ["stem"] + ["msa", "mlp"] * 4 + ["head"]
    model.train()
    loss = F.cross_entropy(model(x), torch.tensor([0, 1, 2, 3]))
    loss.backward()
    assert all(p.grad is not None for p in model.parameters())


@pytest.mark.parametrize("pool", ["token", "avg", "max", "map"])
def test_vit_pooling_variants_build_split_and_train(pool):
    model = load_model("demo_vit", pretrained=False, global_pool=pool)
    x = torch.randn(4, 3, 32, 32)
    assert check_blocks(model, x)[0]
    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    y = torch.tensor([0, 1, 2, 3])
    before = F.cross_entropy(model(x), y).item()
    for _ in range(5):
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()
    assert F.cross_entropy(model(x), y).item() < before
