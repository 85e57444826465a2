"""Make small stand-ins of the paper's four released CIFAR-100 checkpoints, for tests.

Park & Kim released ViT-Ti, PiT-Ti and Swin-Ti (timm models of early 2022, i.e. timm 0.5.x key
layout) and ResNet-50 (their own models/resnet.py `dnn_50(stem=False)`), each as
``{"name": ..., "state_dict": ...}`` in a .pth.tar (their models._save). This script writes, for
each, a checkpoint in that very format, made by that very code (timm 0.5.4; the authors' ResNet), at a reduced size (random weights,
fewer/narrower layers; every file < 300 KB), with the logits that code computes on a few fixed
inputs. tests/test_released_checkpoints.py loads each file into vitlens' registered model (with the
reduced config as model args) and checks it reproduces those logits. One more file, a timm 0.5.4
Swin-Ti with patch 2 (the registry's `swin_ti_cifar_p2`, not the paper's patch 1), is the wrong
convention for the bad-input test.

Writes to OUT (default tests/fixtures/released/): NAME.pth.tar, NAME.io.safetensors (x, logits),
NAME.layout.json (key -> shape of the full-size released model, made with the same code, to check
the registered config against) and manifest.json (per fixture: the vitlens model and model args, the
code and config that made it).

Set-up (temporary, outside the repository; needs the package index once):

    pip install --no-deps --target /tmp/timm054 timm==0.5.4
    pip install --no-deps --target /tmp/authors_deps einops        # the authors' models/layers.py
    mkdir -p /tmp/authors && git -C /work/.mirror/xxxnell+how-do-vits-work/repo archive HEAD models \\
        | tar -x -C /tmp/authors

Run (from the repository root, with vitlens' virtualenv; each model is made in a subprocess with
the old code first on sys.path, so the current timm is never imported there):

    OMP_NUM_THREADS=1 .venv/bin/python scripts/make_released_fixtures.py \\
        --timm054 /tmp/timm054 --authors /tmp/authors --authors-deps /tmp/authors_deps

The weights are seeded, so a rerun with the same torch gives the same files.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RELEASE_URL = "https://github.com/xxxnell/how-do-vits-work-storage/releases/download/v0.1/"

# name -> how to make it. `old_args`: the constructor call of the code that wrote the released file
# (the authors' README config, with smaller dims/depths); `model_args`: what vitlens' registered model
# needs beyond its defaults to be the same network.
FIXTURES = {
    "vit_ti_cifar100_tiny": dict(
        saved_name="vit_ti",
        kind="released", released="vit_ti_cifar100_9857b21357.pth.tar", maker="timm054",
        code="timm 0.5.4 timm.models.vision_transformer.VisionTransformer",
        cls="timm.models.vision_transformer.VisionTransformer",
        old_args=dict(num_classes=100, img_size=32, patch_size=2, embed_dim=24, depth=3, num_heads=3,
                      qkv_bias=False),
        full_args=dict(num_classes=100, img_size=32, patch_size=2, embed_dim=192, depth=12, num_heads=3,
                       qkv_bias=False),
        model="vit_ti_cifar", model_args=dict(embed_dim=24, depth=3, num_classes=100)),
    "pit_ti_cifar100_tiny": dict(
        saved_name="pit_ti",
        kind="released", released="pit_ti_cifar100_0645889efb.pth.tar", maker="timm054",
        code="timm 0.5.4 timm.models.pit.PoolingVisionTransformer",
        cls="timm.models.pit.PoolingVisionTransformer",
        old_args=dict(num_classes=100, img_size=32, patch_size=2, stride=1, base_dims=[4, 4, 4],
                      depth=[1, 2, 1], heads=[2, 4, 8], mlp_ratio=4),
        full_args=dict(num_classes=100, img_size=32, patch_size=2, stride=1, base_dims=[32, 32, 32],
                       depth=[2, 6, 4], heads=[2, 4, 8], mlp_ratio=4),
        model="pit_ti_cifar", model_args=dict(base_dims=[4, 4, 4], depth=[1, 2, 1], num_classes=100)),
    "swin_ti_cifar100_tiny": dict(
        saved_name="swin_ti",
        kind="released", released="swin_ti_cifar100_ec2894492b.pth.tar", maker="timm054",
        code="timm 0.5.4 timm.models.swin_transformer.SwinTransformer",
        cls="timm.models.swin_transformer.SwinTransformer",
        old_args=dict(num_classes=100, img_size=32, patch_size=1, window_size=4, embed_dim=4,
                      depths=[2, 2, 2, 1], num_heads=[2, 4, 8, 16], qkv_bias=False),
        full_args=dict(num_classes=100, img_size=32, patch_size=1, window_size=4, embed_dim=96,
                       depths=[2, 2, 6, 2], num_heads=[3, 6, 12, 24], qkv_bias=False),
        model="swin_ti_cifar", model_args=dict(embed_dim=4, depths=[2, 2, 2, 1], num_heads=[2, 4, 8, 16],
                                               num_classes=100)),
    "resnet_50_cifar100_tiny": dict(
        saved_name="resnet_50",
        kind="released", released="resnet_50_cifar100_691cc9a9e4.pth.tar", maker="authors",
        code="authors' models/resnet.py dnn_50(num_classes=100, stem=False), every width / 32",
        width_divisor=32, old_args=dict(num_classes=100, stem=False), full_args=dict(num_classes=100, stem=False),
        model="resnet50_cifar", model_args=dict(channels=[2, 4, 8, 16], stem_width=2, num_classes=100)),
    # the other convention: patch 2 (and qkv bias, as vitlens' swin_ti_cifar_p2), for the bad-input test
    "swin_ti_p2_cifar100_tiny": dict(
        saved_name="swin_ti",
        kind="mismatch", maker="timm054",
        code="timm 0.5.4 timm.models.swin_transformer.SwinTransformer",
        cls="timm.models.swin_transformer.SwinTransformer",
        old_args=dict(num_classes=100, img_size=32, patch_size=2, window_size=4, embed_dim=4,
                      depths=[2, 1, 1, 1], num_heads=[2, 4, 8, 16]),
        model="swin_ti_cifar", model_args=dict(embed_dim=4, depths=[2, 1, 1, 1], num_heads=[2, 4, 8, 16],
                                               num_classes=100),
        fits="swin_ti_cifar_p2"),
}
SEED = 20220214
NUM_INPUTS = 3


def _randomize(model, seed: int) -> None:
    """Seeded weights at a scale that keeps activations O(1), with non-trivial norm statistics (so
    that a wrongly mapped norm or bias shows in the logits)."""
    import torch
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in sorted(model.state_dict(keep_vars=True).items()):
            if not p.dtype.is_floating_point:
                continue
            leaf = name.rsplit(".", 1)[-1]
            if leaf == "running_var":
                p.copy_(torch.rand(p.shape, generator=gen) + 0.5)
            elif leaf == "running_mean":
                p.copy_(0.1 * torch.randn(p.shape, generator=gen))
            elif "relative_position_index" in name or "attn_mask" in name:
                continue  # derived buffers
            elif p.dim() >= 2 and leaf == "weight":
                fan_in = max(1, p[0].numel())
                p.copy_(torch.randn(p.shape, generator=gen) / math.sqrt(fan_in))
            elif leaf == "weight":  # norm scales
                p.copy_(1.0 + 0.2 * torch.randn(p.shape, generator=gen))
            else:  # biases, position embeddings, class tokens, relative position tables
                p.copy_(0.1 * torch.randn(p.shape, generator=gen))


def _authors_resnet(authors: str, divisor: int, old_args: dict):
    """The authors' ResNet-50 (their ResNet class and Bottleneck, unmodified) with every width divided
    by DIVISOR: their layer factories (models/layers.py convnxn, bn, dense) are wrapped so that the
    channel counts they are called with shrink; input channels (3) and classes stay."""
    import types
    pkg = types.ModuleType("models")  # their models/__init__.py imports every model: skip it
    pkg.__path__ = [str(Path(authors) / "models")]
    sys.modules["models"] = pkg
    import models.layers as layers
    import models.resnet as resnet

    def narrow(c):
        return c if c == 3 else max(1, c // divisor)
    convnxn, bn, dense = layers.convnxn, layers.bn, layers.dense
    layers.convnxn = lambda i, o, *a, **k: convnxn(narrow(i), narrow(o), *a, **k)
    layers.bn = lambda d: bn(narrow(d))
    layers.dense = lambda i, o, bias=True: dense(narrow(i), o, bias)
    try:
        model = resnet.dnn_50(**old_args)
    finally:
        layers.convnxn, layers.bn, layers.dense = convnxn, bn, dense
    full = resnet.dnn_50(**old_args)  # the released layout: the same keys, at full width
    assert list(full.state_dict()) == list(model.state_dict())
    return model, full


def worker(name: str, out: Path, authors: str | None) -> None:
    """Runs in a subprocess whose sys.path starts with the old code: make NAME and write its files."""
    import importlib

    import torch
    spec = FIXTURES[name]
    full = None
    if spec["maker"] == "authors":
        model, full = _authors_resnet(authors, spec["width_divisor"], spec["old_args"])
        made_with = "authors' code at " + str(Path(authors).resolve())
    else:
        import timm
        assert timm.__version__ == "0.5.4", timm.__version__
        module, cls = spec["cls"].rsplit(".", 1)
        model = getattr(importlib.import_module(module), cls)(**spec["old_args"])
        if "full_args" in spec:
            full = getattr(importlib.import_module(module), cls)(**spec["full_args"])
        made_with = f"timm {timm.__version__}"
    if full is not None:  # the full-size released layout: key -> shape
        layout = {k: list(v.shape) for k, v in full.state_dict().items()}
        (out / f"{name}.layout.json").write_text(json.dumps(layout, indent=0) + "\n")
    _randomize(model, SEED)
    model.eval()
    x = torch.randn(NUM_INPUTS, 3, 32, 32, generator=torch.Generator().manual_seed(SEED + 1))
    with torch.no_grad():
        logits = model(x)
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    # as the authors' models._save wrote it: {"name": model.name, "state_dict": ...}
    torch.save({"name": spec["saved_name"], "state_dict": state}, out / f"{name}.pth.tar")
    from safetensors.torch import save_file
    save_file({"x": x.contiguous(), "logits": logits.contiguous()}, str(out / f"{name}.io.safetensors"))
    print(json.dumps({"name": name, "made_with": made_with, "torch": torch.__version__,
                      "keys": len(state), "params": sum(v.numel() for v in state.values())}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--timm054", required=True, help="folder with timm 0.5.4 (pip install --target)")
    parser.add_argument("--authors", required=True, help="folder with the authors' models/ (git archive)")
    parser.add_argument("--authors-deps", default=None, help="folder with einops (pip install --target)")
    parser.add_argument("--out", default=str(ROOT / "tests" / "fixtures" / "released"))
    parser.add_argument("--only", nargs="*", default=None, help="fixture names (default: all)")
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    out = Path(args.out)
    if args.worker:
        worker(args.worker, out, args.authors)
        return
    out.mkdir(parents=True, exist_ok=True)
    manifest_path = out / "manifest.json"
    manifest = json.loads(manifest_path.read_text()) if manifest_path.is_file() else {}
    for name in args.only or list(FIXTURES):
        spec = FIXTURES[name]
        first = [args.timm054] if spec["maker"] == "timm054" else [args.authors] + (
            [args.authors_deps] if args.authors_deps else [])
        # the old code first on sys.path; vitlens' own checkout and the current timm stay out of the way
        argv = [__file__, "--worker", name, "--out", str(out), "--timm054", args.timm054, "--authors", args.authors]
        boot = (f"import sys; sys.path[:0] = {first!r}; sys.argv = {argv!r}; import runpy; "
                f"runpy.run_path({str(Path(__file__).resolve())!r}, run_name='__main__')")
        env = dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"))
        env.pop("PYTHONPATH", None)
        proc = subprocess.run([sys.executable, "-c", boot], cwd="/tmp", env=env, capture_output=True, text=True)
        if proc.returncode != 0:
            sys.exit(f"{name}: failed\n{proc.stderr}")
        info = json.loads(proc.stdout.strip().splitlines()[-1])
        entry = {k: spec[k] for k in ("kind", "model", "model_args", "code", "old_args", "full_args") if k in spec}
        if "full_args" in spec:  # the full-size model's key -> shape, to check the registered config
            entry["full_layout"] = f"{name}.layout.json"
        entry.update(file=f"{name}.pth.tar", io=f"{name}.io.safetensors", made_with=info["made_with"].split(" at ")[0],
                     torch=info["torch"], params=info["params"])
        if "released" in spec:
            entry.update(released=spec["released"], url=RELEASE_URL + spec["released"])
        if "fits" in spec:
            entry["fits"] = spec["fits"]
        manifest[name] = entry
        size = (out / entry["file"]).stat().st_size
        print(f"{name}: {info['params']} params, {size / 1024:.0f} KB ({entry['made_with']})")
    manifest_path.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    print(f"wrote {manifest_path}")


if __name__ == "__main__":
    main()
