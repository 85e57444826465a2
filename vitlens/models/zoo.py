"""The models vitlens registers by name: the paper's CIFAR models, AlterNet, and the demo models.

CIFAR variants are the configs of Park & Kim 2022 for 32x32 inputs, as in the authors' README and
their released CIFAR-100 checkpoints (`released.RELEASED`; they load with num_classes=100):
  * vit_ti_cifar   ViT-Ti: patch 2, dim 192, depth 12, 3 heads, no qkv bias (timm VisionTransformer);
  * resnet50_cifar the authors' ResNet-50 (models/resnet.py dnn_50, stem=False: 3x3 conv-BN-ReLU with
                   stride 1 and no max-pool, bottlenecks 3/4/6/3, GAP + linear head), built as the
                   equivalent timm ResNet; their key names are converted on loading;
  * resnet18_cifar the same with basic blocks 2/2/2/2 (dnn_18; no released checkpoint);
  * swin_ti_cifar  Swin-Ti: patch 1, window 4, dim 96, depths 2/2/6/2, heads 3/6/12/24, no qkv bias
                   (maps 32/16/8/4, so the last stage is one window and unshifted);
  * pit_ti_cifar   PiT-Ti: 2x2 patches with stride 1 (a 31x31 map), dims 32x[2,4,8] heads, depth 2/6/4,
                   mlp ratio 4.
Not the paper's: swin_ti_cifar_p2 (patch 2) and pit_ti_cifar_s2 (stride-2 patches), the variants this
registry used to call swin_ti_cifar / pit_ti_cifar.
Demo models are small enough to train on the embedded digits data set on 2 CPU cores in minutes;
their trained weights ship in vitlens/assets (see README for the command that reproduces them).
"""
from __future__ import annotations

from importlib import resources

import torch.nn as nn

from ..errors import VitlensError
from .alternet import AlterNet
from .checkpoints import load_checkpoint
from .convvit import ConvViT
from .registry import IMAGENET_MEAN, IMAGENET_STD, ModelEntry, register_model

# timm's classes are imported inside the builders: timm is heavy, and `import vitlens` and the AlterNet
# models do without it.


def _vit(**kw) -> nn.Module:
    from timm.models.vision_transformer import VisionTransformer  # deferred: timm is heavy
    return VisionTransformer(**kw)


def _cifar_resnet(block: str = "basic", layers=(2, 2, 2, 2), stem_width: int = 64, **kw) -> nn.Module:
    """timm ResNet with the CIFAR stem: the same network as the authors' ResNet with stem=False.

    `channels` (stage widths) and `stem_width` may be narrowed (the authors' code ties the stem to
    64, the first stage's width); timm keys, the authors' keys are converted on loading."""
    from timm.models.resnet import BasicBlock, Bottleneck, ResNet  # deferred: timm is heavy
    block_cls = BasicBlock if block == "basic" else Bottleneck
    if stem_width == 64:
        model = ResNet(block=block_cls, layers=tuple(layers), **kw)
    else:  # timm's plain stem is always 64 wide; its deep stem ends at 2 x stem_width channels
        if stem_width % 2 or stem_width < 2:
            raise VitlensError(f"stem_width must be an even number, got {stem_width}")
        model = ResNet(block=block_cls, layers=tuple(layers), stem_type="deep", stem_width=stem_width // 2, **kw)
    # CIFAR stem (He et al. 2016, Sec. 4.2): 3x3 conv with stride 1 and no max-pool for 32x32 images.
    model.conv1 = nn.Conv2d(kw.get("in_chans", 3), stem_width, 3, 1, 1, bias=False)
    model.maxpool = nn.Identity()
    return model


def _swin(**kw) -> nn.Module:
    from timm.models.swin_transformer import SwinTransformer  # deferred: timm is heavy
    return SwinTransformer(**kw)


def _pit(**kw) -> nn.Module:
    from timm.models.pit import PoolingVisionTransformer  # deferred: timm is heavy
    return PoolingVisionTransformer(**kw)


def _load_shipped(name: str):
    """Loader for weights that ship inside the package (vitlens/assets/NAME.safetensors)."""
    def load(model: nn.Module, args: dict) -> None:
        path = resources.files("vitlens") / "assets" / f"{name}.safetensors"
        if not path.is_file():
            raise VitlensError(f"shipped weights for {name} are missing ({path}); reinstall vitlens or "
                               f"run `vitlens train --model {name} --dataset digits`")
        load_checkpoint(model, str(path))
    return load


def _demo(name: str, description: str, build, args: dict) -> ModelEntry:
    """A demo model: 10 classes, trained on the embedded digits set (grey, so the same mean/std for
    each channel), weights shipped in vitlens/assets."""
    return ModelEntry(name, "demo", description, build, dict(args, num_classes=10),
                      mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), pretrained=_load_shipped(name))


CIFAR_DOC = "paper CIFAR model, 32x32 inputs"
for entry in [
    ModelEntry("vit_ti_cifar", "vit", f"ViT-Ti ({CIFAR_DOC}): patch 2, dim 192, depth 12, 3 heads, no qkv bias",
               _vit, dict(img_size=32, patch_size=2, embed_dim=192, depth=12, num_heads=3,
                          qkv_bias=False, num_classes=10)),
    ModelEntry("resnet18_cifar", "resnet", f"ResNet-18 ({CIFAR_DOC}): 3x3 stride-1 stem, no max-pool",
               _cifar_resnet, dict(block="basic", layers=(2, 2, 2, 2), num_classes=10)),
    ModelEntry("resnet50_cifar", "resnet", f"ResNet-50 ({CIFAR_DOC}): the authors' dnn_50, stem=False "
               "(3x3 stride-1 stem, no max-pool)",
               _cifar_resnet, dict(block="bottleneck", layers=(3, 4, 6, 3), num_classes=10)),
    ModelEntry("swin_ti_cifar", "swin", f"Swin-Ti ({CIFAR_DOC}): patch 1, window 4, no qkv bias",
               _swin, dict(img_size=32, patch_size=1, window_size=4, embed_dim=96, depths=(2, 2, 6, 2),
                           num_heads=(3, 6, 12, 24), qkv_bias=False, num_classes=10)),
    ModelEntry("pit_ti_cifar", "pit", f"PiT-Ti ({CIFAR_DOC}): 2x2 patches, stride 1, depth 2/6/4",
               _pit, dict(img_size=32, patch_size=2, stride=1, base_dims=(32, 32, 32), depth=(2, 6, 4),
                          heads=(2, 4, 8), mlp_ratio=4, num_classes=10)),
    ModelEntry("swin_ti_cifar_p2", "swin", "Swin-Ti with patch 2, window 4 (not the paper's: it uses patch 1)",
               _swin, dict(img_size=32, patch_size=2, window_size=4, embed_dim=96, depths=(2, 2, 6, 2),
                           num_heads=(3, 6, 12, 24), qkv_bias=True, num_classes=10)),
    ModelEntry("pit_ti_cifar_s2", "pit", "PiT-Ti with 2x2 stride-2 patches (not the paper's: it uses stride 1)",
               _pit, dict(img_size=32, patch_size=2, stride=2, base_dims=(32, 32, 32), depth=(2, 6, 4),
                          heads=(2, 4, 8), mlp_ratio=4, num_classes=10)),
    ModelEntry("alternet18_cifar", "alternet", "AlterNet-18 (CIFAR): blocks 2/2/2/2, MSA 0/1/1/1, window 4",
               AlterNet, dict(depths=(2, 2, 2, 2), msa=(0, 1, 1, 1), heads=(3, 6, 12, 24), window=4,
                              block="basic", stem="cifar", num_classes=10)),
    ModelEntry("alternet50_cifar", "alternet", "AlterNet-50 (CIFAR): blocks 3/4/6/4, MSA 0/1/3/2, window 4",
               AlterNet, dict(depths=(3, 4, 6, 4), msa=(0, 1, 3, 2), heads=(3, 6, 12, 24), window=4,
                              block="bottleneck", stem="cifar", num_classes=100)),
    ModelEntry("alternet18", "alternet", "AlterNet-18 (ImageNet, 224x224): blocks 2/2/2/2, MSA 0/1/1/1, window 7",
               AlterNet, dict(depths=(2, 2, 2, 2), msa=(0, 1, 1, 1), heads=(3, 6, 12, 24), window=7,
                              block="basic", stem="imagenet", num_classes=1000),
               input_size=(3, 224, 224), mean=IMAGENET_MEAN, std=IMAGENET_STD),
    ModelEntry("alternet50", "alternet", "AlterNet-50 (ImageNet, 224x224): blocks 3/4/6/4, MSA 0/1/3/2, window 7",
               AlterNet, dict(depths=(3, 4, 6, 4), msa=(0, 1, 3, 2), heads=(3, 6, 12, 24), window=7,
                              block="bottleneck", stem="imagenet", num_classes=1000),
               input_size=(3, 224, 224), mean=IMAGENET_MEAN, std=IMAGENET_STD),
    ModelEntry("alternet", "alternet", "AlterNet with your own depths/msa/heads/widths/window (--model-args)",
               AlterNet, dict(num_classes=10)),
    ModelEntry("convvit_ti_cifar", "convvit", f"ConvViT-Ti ({CIFAR_DOC}): ViT-Ti whose attention sees each token's "
               "k x k neighbourhood (kernel_size, default 3): patch 2, dim 192, depth 12, 3 heads of 64",
               ConvViT, dict(img_size=32, patch_size=2, embed_dim=192, depth=12, num_heads=3, head_dim=64,
                             mlp_ratio=4.0, kernel_size=3, num_classes=10)),
    ModelEntry("convvit_demo", "convvit", "mini ConvViT (patch 4, dim 64, depth 4, 4 heads of 16, kernel_size 3), "
               "32x32, for CPU experiments (no shipped weights)",
               ConvViT, dict(img_size=32, patch_size=4, embed_dim=64, depth=4, num_heads=4, head_dim=16,
                             mlp_ratio=2.0, kernel_size=3, num_classes=10), mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5)),
    # Demo models: small enough to train on 2 CPU cores in minutes.
    _demo("demo_resnet", "mini pre-activation ResNet (3 stages, widths 16/32/64), 32x32",
          AlterNet, dict(depths=(1, 1, 1), msa=(0, 0, 0), heads=(1, 2, 4), widths=(16, 32, 64), window=4,
                         head_dim=16)),
    _demo("demo_vit", "mini ViT (patch 4, dim 64, depth 4, 4 heads), 32x32",
          _vit, dict(img_size=32, patch_size=4, embed_dim=64, depth=4, num_heads=4, mlp_ratio=2.0)),
    _demo("demo_alternet", "mini AlterNet (widths 16/32/64; stages C | C M C M | C M), 32x32",
          AlterNet, dict(depths=(1, 4, 2), msa=(0, 2, 1), heads=(1, 2, 4), widths=(16, 32, 64), window=4,
                         head_dim=16)),
    # Deeper demos, deep enough to show the paper's structure (blocks per stage, depth): the findings.
    _demo("demo_resnet_deep", "pre-activation ResNet (3 stages x 2 blocks, widths 16/32/64), 32x32",
          AlterNet, dict(depths=(2, 2, 2), msa=(0, 0, 0), heads=(1, 2, 4), widths=(16, 32, 64), window=4,
                         head_dim=16)),
    _demo("demo_vit_deep", "ViT (patch 4, dim 64, depth 6, 4 heads), 32x32",
          _vit, dict(img_size=32, patch_size=4, embed_dim=64, depth=6, num_heads=4, mlp_ratio=2.0)),
]:
    register_model(entry)
