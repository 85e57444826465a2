"""The CIFAR-100 checkpoints released with Park & Kim 2022, and the registered model each loads into.

vitlens does not download them (`read_state_dict` refuses URLs): `vitlens models` lists the links,
and `load_checkpoint` converts their timm 0.5 / authors' key layouts (`convert.CONVERTERS`).
"""
from __future__ import annotations

from dataclasses import dataclass

RELEASE_URL = "https://github.com/xxxnell/how-do-vits-work-storage/releases/download/v0.1/"


@dataclass(frozen=True)
class Released:
    """A CIFAR-100 checkpoint released with Park & Kim 2022 (linked from the authors' README)."""

    model: str  # the registered model it loads into (with num_classes 100)
    file: str
    source: str  # what wrote it
    dataset: str = "cifar100"
    num_classes: int = 100

    @property
    def url(self) -> str:
        return RELEASE_URL + self.file


RELEASED = (
    Released("resnet50_cifar", "resnet_50_cifar100_691cc9a9e4.pth.tar", "authors' models/resnet.py dnn_50(stem=False)"),
    Released("vit_ti_cifar", "vit_ti_cifar100_9857b21357.pth.tar", "timm 0.5 VisionTransformer"),
    Released("pit_ti_cifar", "pit_ti_cifar100_0645889efb.pth.tar", "timm 0.5 PoolingVisionTransformer"),
    Released("swin_ti_cifar", "swin_ti_cifar100_ec2894492b.pth.tar", "timm 0.5 SwinTransformer"),
)


def released_checkpoint(model: str) -> Released | None:
    """The released checkpoint that the registered MODEL loads, if any."""
    return next((r for r in RELEASED if r.model == model), None)
