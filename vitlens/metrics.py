"""Classification metrics over a data set: accuracy, mean NLL, and expected calibration error.

ECE as in Guo et al. 2017 ("On Calibration of Modern Neural Networks"): predictions are binned by
confidence (equal-width bins), ECE = sum_b (n_b / n) |accuracy_b - confidence_b|. The authors of
Park & Kim 2022 use 10 bins (their `ops/tests.py`).
"""
from __future__ import annotations

import pandas as pd
import torch
import torch.nn.functional as F


class Scores:
    """Running accuracy and mean NLL over batches of logits (used by lesion and noise studies)."""

    def __init__(self):
        self.correct, self.nll_sum, self.count = 0, 0.0, 0

    def add(self, logits: torch.Tensor, labels: torch.Tensor) -> None:
        logits, labels = logits.float(), labels.to(logits.device)
        self.correct += int((logits.argmax(dim=1) == labels).sum())
        self.nll_sum += float(F.cross_entropy(logits, labels, reduction="sum"))
        self.count += int(labels.numel())

    @property
    def accuracy(self) -> float:
        return self.correct / max(self.count, 1)

    @property
    def nll(self) -> float:
        return self.nll_sum / max(self.count, 1)


@torch.no_grad()
def predict(model, loader, device, progress=None):
    """Logits and labels of a whole loader."""
    logits, labels = [], []
    for x, y in loader:
        logits.append(model(x.to(device)).float().cpu())
        labels.append(torch.as_tensor(y).long())
        if progress is not None:
            progress.update(1)
    return torch.cat(logits), torch.cat(labels)


def calibration_bins(probs: torch.Tensor, labels: torch.Tensor, bins: int = 15) -> pd.DataFrame:
    conf, pred = probs.max(dim=1)
    correct = (pred == labels).float()
    edges = torch.linspace(0, 1, bins + 1)
    rows = []
    for i in range(bins):
        lo, hi = edges[i].item(), edges[i + 1].item()
        mask = (conf > lo) & (conf <= hi) if i else (conf >= lo) & (conf <= hi)
        n = int(mask.sum())
        rows.append(dict(bin=i, lower=lo, upper=hi, count=n,
                         confidence=float(conf[mask].mean()) if n else float("nan"),
                         accuracy=float(correct[mask].mean()) if n else float("nan")))
    return pd.DataFrame(rows)


def expected_calibration_error(bins: pd.DataFrame) -> float:
    used = bins[bins["count"] > 0]
    total = used["count"].sum()
    return float(((used["count"] / total) * (used["accuracy"] - used["confidence"]).abs()).sum())
