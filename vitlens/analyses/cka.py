"""Feature similarity between all pairs of blocks: linear CKA with a minibatch HSIC estimator.

Linear CKA (Kornblith et al. 2019, "Similarity of Neural Network Representations Revisited"):
    CKA(X, Y) = HSIC(K, L) / sqrt(HSIC(K, K) HSIC(L, L)),   K = X X^T, L = Y Y^T  (n x n Gram matrices)
for representations X, Y of the same n examples (each flattened to one row per example).

Minibatch CKA (Nguyen, Raghu & Kornblith 2021, "Do Wide and Deep Networks Learn the Same Things?"):
HSIC is estimated on each minibatch with the unbiased estimator of Song et al. 2012,
    HSIC_1(K, L) = [tr(K~ L~) + 1^T K~ 1 1^T L~ 1 / ((n-1)(n-2)) - 2/(n-2) 1^T K~ L~ 1] / (n (n-3)),
K~, L~ the Gram matrices with zeroed diagonals, and averaged over minibatches before the ratio is taken.
Since each HSIC_1 is unbiased, the average converges to the full-data value while memory holds one
batch's Gram matrices. Here the average weights each batch by its size (equal weights for equal
batches); batches of fewer than 4 examples (the estimator needs n >= 4) are left out.

A block's representation is its feature map (class tokens dropped, as in the other feature analyses)
flattened per example, or the logits for the head. Batches come in a seeded random order so that
minibatches are random samples of the data.
"""
from __future__ import annotations

import pandas as pd
import torch

from ..context import Context
from ..errors import VitlensError
from ..features import Reducer, block_table
from ..result import Result
from . import Figure, Memory, Page, register_analysis


def gram(x: torch.Tensor, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """Linear-kernel Gram matrix X X^T of a batch (each example flattened)."""
    flat = x.reshape(x.shape[0], -1).to(dtype)
    return flat @ flat.T


def hsic_matrix(grams: torch.Tensor) -> torch.Tensor:
    """Unbiased HSIC_1 (Song et al. 2012) between every pair of (N, n, n) Gram matrices -> (N, N)."""
    count, n, _ = grams.shape
    if n < 4:
        raise VitlensError(f"the unbiased HSIC estimator needs at least 4 examples per batch, got {n}")
    hollow = grams.clone()
    hollow.diagonal(dim1=1, dim2=2).zero_()
    flat = hollow.reshape(count, -1)
    trace_term = flat @ flat.T                       # tr(K~ L~) = <K~, L~> (symmetric)
    totals = flat.sum(dim=1)                         # 1^T K~ 1
    row_sums = hollow.sum(dim=2)                     # K~ 1
    cross_term = row_sums @ row_sums.T               # 1^T K~ L~ 1
    hsic = trace_term + torch.outer(totals, totals) / ((n - 1) * (n - 2)) - 2.0 / (n - 2) * cross_term
    return hsic / (n * (n - 3))


def unbiased_hsic(k: torch.Tensor, l: torch.Tensor) -> torch.Tensor:
    """HSIC_1 of two n x n Gram matrices."""
    return hsic_matrix(torch.stack([k, l]))[0, 1]


def cka_from_hsic(hsic: torch.Tensor) -> torch.Tensor:
    """CKA matrix from a matrix of (averaged) HSIC values: H_ij / sqrt(H_ii H_jj)."""
    scale = hsic.diagonal().clamp_min(0).sqrt()
    return hsic / torch.outer(scale, scale)


def linear_cka(x: torch.Tensor, y: torch.Tensor) -> float:
    """Full-batch linear CKA (Kornblith et al. 2019) with the usual (biased) HSIC of centred Grams.

    Centring the features centres the Gram matrices (H K H = Xc Xc^T); with few features the
    feature-space form ||Yc^T Xc||_F^2 / (||Xc^T Xc||_F ||Yc^T Yc||_F) avoids the n x n matrices."""
    xc = x.reshape(x.shape[0], -1).double()
    yc = y.reshape(y.shape[0], -1).double()
    xc, yc = xc - xc.mean(dim=0), yc - yc.mean(dim=0)
    if max(xc.shape[1], yc.shape[1]) <= xc.shape[0]:
        return float((yc.T @ xc).pow(2).sum() / ((xc.T @ xc).norm() * (yc.T @ yc).norm()))
    kc, lc = xc @ xc.T, yc @ yc.T
    return float((kc * lc).sum() / (kc.norm() * lc.norm()))


def minibatch_cka(x: torch.Tensor, y: torch.Tensor, batch_size: int) -> float:
    """Linear CKA of X and Y from unbiased HSIC averaged over consecutive minibatches (Nguyen et al. 2021)."""
    total, weight = torch.zeros(2, 2, dtype=torch.float64), 0
    for start in range(0, x.shape[0], batch_size):
        xb, yb = x[start:start + batch_size], y[start:start + batch_size]
        if xb.shape[0] < 4:
            continue
        total += xb.shape[0] * hsic_matrix(torch.stack([gram(xb), gram(yb)]))
        weight += xb.shape[0]
    return float(cka_from_hsic(total / weight)[0, 1])


class CKAReducer(Reducer):
    """Accumulates the minibatch HSIC_1 between every pair of blocks."""

    def start(self, block_list, device):
        super().start(block_list, device)
        self.grams: dict[int, torch.Tensor] = {}
        self.hsic_sum: torch.Tensor | None = None
        self.weight = 0
        self.skipped = 0

    def update(self, index, block, output, fmap):
        rep = fmap if fmap is not None else output
        if not isinstance(rep, torch.Tensor):
            raise VitlensError(f"block {block.name}: cannot read its output as a representation")
        self.grams[index] = gram(rep, self.dtype)

    def end_batch(self, labels):
        order = sorted(self.grams)
        grams = torch.stack([self.grams[i] for i in order])
        self.grams = {}
        n = grams.shape[1]
        if n < 4:
            self.skipped += n
            return
        hsic = n * hsic_matrix(grams)
        self.hsic_sum = hsic if self.hsic_sum is None else self.hsic_sum + hsic
        self.weight += n
        self.order = order

    def cka(self) -> torch.Tensor:
        if self.hsic_sum is None:
            raise VitlensError("CKA needs batches of at least 4 examples (raise --batch-size or --samples)")
        return cka_from_hsic(self.hsic_sum.cpu().double() / self.weight)


def cka_frame(reducer: CKAReducer, block_list) -> pd.DataFrame:
    """Heat-map rows: i, j, name_i, name_j, kind_i, kind_j, stage_i, stage_j, depth_i, depth_j, cka."""
    table = block_table(block_list)
    matrix = reducer.cka().numpy()
    rows = []
    for a, i in enumerate(reducer.order):
        for b, j in enumerate(reducer.order):
            ti, tj = table[i], table[j]
            rows.append(dict(i=i, j=j, name_i=ti["name"], name_j=tj["name"], kind_i=ti["kind"], kind_j=tj["kind"],
                             stage_i=ti["stage"], stage_j=tj["stage"], depth_i=ti["depth"], depth_j=tj["depth"],
                             cka=float(matrix[a, b])))
    return pd.DataFrame(rows)


@register_analysis("cka", "linear CKA similarity between the outputs of every pair of blocks, minibatch unbiased "
                   "HSIC (Kornblith et al. 2019; Nguyen et al. 2021)",
                   conventions="block outputs flattened per sample; unbiased minibatch HSIC", lane="interactive",
                   page=Page("Feature similarity (CKA)", "Similarity", 7, options=(), caption=(
                       "Linear CKA between the outputs of every pair of blocks, with the unbiased minibatch HSIC "
                       "estimator (Nguyen et al. 2021). Multi-stage networks show a block structure: features are "
                       "similar within a stage and change at the stage boundaries.")),
                   figures=[Figure("cka_heatmap")], memory=Memory(graph=0.5, working=3))  # every block's batch
def cka(ctx: Context, params: dict) -> Result:
    reducer = CKAReducer()
    block_list = ctx.collect(reducer, "cka", shuffle=True)
    frame = cka_frame(reducer, block_list)
    summary = dict(blocks=len(reducer.order), samples=reducer.weight, samples_left_out=reducer.skipped)
    return Result(frame, {"analysis": "cka", "summary": summary})
