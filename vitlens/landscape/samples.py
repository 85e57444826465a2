"""The evaluation samples of a loss landscape, prepared once, and their per-sample NLL."""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from ..data import make_loader, soft_targets
from ..errors import VitlensError


@dataclass
class Samples:
    """The evaluation samples, prepared once: batches of (x, target, label) on the model's device."""

    batches: list = field(default_factory=list)

    @property
    def count(self) -> int:
        return sum(len(b[0]) for b in self.batches)


def prepare_samples(data, batch_size: int = 64, seed: int = 0, shuffle: bool = True,
                    num_classes: int | None = None, mixup: float = 0.0, cutmix: float = 0.0,
                    label_smoothing: float = 0.0, device: torch.device | str | None = None) -> Samples:
    """Prepare DATA (a Dataset, or an iterable of (x, y) batches) for `loss_surface`.

    With ``shuffle`` the samples are visited in an order fixed by SEED (statistical mode relies on
    it: every prefix is then a random sample). Mixup/cutmix/label smoothing are applied once per
    batch with a generator seeded by SEED, so every grid point sees the same mixed inputs (the paper
    re-draws the mixing at every point, which adds noise between points).
    """
    if isinstance(data, torch.utils.data.Dataset):
        if len(data) == 0:
            raise VitlensError("the data set is empty: the loss landscape needs at least one sample")
        data = make_loader(data, batch_size, shuffle=shuffle, seed=seed)
    soft = mixup > 0 or cutmix > 0 or label_smoothing > 0
    generator = torch.Generator().manual_seed(int(seed))
    out = Samples()
    for x, y in data:
        x, y = torch.as_tensor(x), torch.as_tensor(y)
        if len(x) == 0:
            continue
        label = y.argmax(dim=1) if y.dim() > 1 else y.long()
        target = y if y.dim() > 1 else y.long()
        if soft and y.dim() == 1:
            if not num_classes:
                raise VitlensError("soft targets (mixup/cutmix/label smoothing) need the number of classes")
            x, target = soft_targets(x, y.long(), int(num_classes), mixup, cutmix, label_smoothing, generator)
            label = target.argmax(dim=1)  # accuracy against the dominant class, as the paper's code
        out.batches.append((x.to(device) if device is not None else x,
                            target.to(device) if device is not None else target,
                            label.to(device) if device is not None else label))
    if not out.batches:
        raise VitlensError("the data set is empty: the loss landscape needs at least one sample")
    return out


def per_sample_nll(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """-log p(target | x) per sample; TARGET is integer labels (B,) or soft targets (B, C)."""
    logp = F.log_softmax(logits.float(), dim=1)
    if target.dim() == 1:
        return -logp.gather(1, target.long()[:, None]).squeeze(1)
    return -(target.float() * logp).sum(dim=1)
