"""Requests sized and checked before anything is built or queued: architecture arguments (bounds,
then a build on the meta device), non-finite weights and data, output paths, queue locations, list
options; every bad input is exit 2 with one line, never "internal error"."""
import json
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from safetensors.torch import save_file

from vitlens.cli import main
from vitlens.errors import VitlensError
from vitlens.jobs import Limits
from vitlens.models import load_model
from vitlens.models.sizing import size_model
from vitlens.request import JobSpec

ROOT = Path(__file__).resolve().parents[1]
SMALL = ["--samples", "16", "--batch-size", "16", "--device", "cpu"]


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("VITLENS_CACHE_DIR", str(tmp_path / "cache"))


def run_cli(args, capsys) -> tuple[int, str]:
    try:
        code = main(args)
    except SystemExit as stop:
        code = stop.code
    err = capsys.readouterr().err.strip().splitlines()
    return code, (err[-1] if err else "")


# The architecture arguments the hostile sweep found (issue #25): each is exit 2 with one line.
BAD_ARGS = [
    ("demo_vit", {"depth": 1000000}, "depth must be a whole number from 1 to 64"),
    ("demo_vit", {"embed_dim": 60000}, "VITLENS_MAX_WIDTH"),
    ("demo_vit", {"mlp_ratio": 1e6}, "mlp_ratio"),
    ("demo_vit", {"num_heads": 0}, "num_heads"),
    ("timm:vit_tiny_patch16_224", {"patch_size": 0, "num_classes": 10}, "patch_size"),
    ("demo_vit", {"embed_dim": -3}, "embed_dim"),
    ("demo_vit", {"drop_rate": 5}, "drop_rate"),
    ("demo_vit", {"in_chans": 0}, "in_chans"),
    ("timm:resnet18", {"layers": [2, 2], "num_classes": 10}, "cannot take a 3x224x224 input"),
    ("timm:vit_tiny_patch16_224", {"img_size": 8, "num_classes": 10}, "cannot take a 3x8x8 input"),
    ("demo_vit", {"num_heads": 5}, "cannot be built"),
    ("alternet50", {"depths": [1000, 1, 1, 1]}, "depths"),
    ("timm:vit_giant_patch14_224", {}, "VITLENS_MAX_PARAMS"),
]


@pytest.mark.parametrize("model,args,reason", BAD_ARGS, ids=[f"{m}-{json.dumps(a)}" for m, a, _ in BAD_ARGS])
def test_architecture_arguments_that_cannot_build_are_one_line(model, args, reason, capsys):
    code, line = run_cli(["run", "variance", "--model", model, "--model-args", json.dumps(args), *SMALL], capsys)
    assert code == 2 and line.startswith("vitlens: error:") and reason in line, line
    with pytest.raises(VitlensError, match=reason.split(" ")[0]):
        Limits().check(JobSpec(analysis="variance", model=model, model_args=args))  # refused before queueing


def test_a_refused_request_allocates_nothing_large():
    """A ViT of embed_dim 16384 would hold billions of parameters: refused from the bounds (and a
    timm giant from its meta build) without the process growing (measured in a fresh process; the
    time it takes is in benchmarks/bench_sizing.py)."""
    code = ("import json, resource, time, sys\nfrom vitlens.models.sizing import size_model\n"
            "from vitlens.errors import VitlensError\nbefore = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
            "t = time.perf_counter()\nfor spec, args in [('demo_vit', {'embed_dim': 16384}), ('demo_vit', {'depth': 1000000}),"
            " ('timm:vit_giant_patch14_224', {})]:\n    try:\n        size_model(spec, args)\n    except VitlensError:\n"
            "        pass\nprint(json.dumps([time.perf_counter() - t, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before]))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT)
    _, grown_kib = json.loads(out.stdout.strip().splitlines()[-1])
    assert grown_kib < 200 * 1024, grown_kib  # 1e9 parameters would be 4 GB: on meta, nothing


def test_random_architecture_arguments_build_or_exit_2(capsys):
    """Property-style: arguments drawn for ViT, ResNet and AlterNet either build and run or give exit
    2 with one line, never an internal error (exit 1)."""
    rng = random.Random(25)
    choices = {"depth": [0, 1, 2, 65, -1, 1.5], "embed_dim": [0, 8, 30, 64, 5000], "num_heads": [0, 1, 3, 4, 300],
               "mlp_ratio": [0, 0.5, 2, 40], "patch_size": [0, 1, 4, 64], "img_size": [4, 16, 32, 2000],
               "drop_rate": [0.0, 0.5, 1.5], "in_chans": [0, 1, 3], "depths": [[1, 1, 1, 1], [0, 1, 1, 1], [2, 200]],
               "widths": [[8, 16, 32, 64], [0, 8, 8, 8], [8, 8]], "window": [0, 2, 4, 9], "heads": [[1, 1, 1, 1], [0]]}
    families = {"timm:vit_tiny_patch16_224": (["depth", "embed_dim", "num_heads", "mlp_ratio", "patch_size",
                                               "img_size", "drop_rate"], {"num_classes": 10, "img_size": 32}),
                "timm:resnet18": (["in_chans", "drop_rate"], {"num_classes": 10}),
                "alternet": (["depths", "widths", "window", "heads", "in_chans"], {"num_classes": 10})}
    codes = []
    for _ in range(24):
        model = rng.choice(list(families))
        names, base = families[model]
        keys = rng.sample(names, k=rng.randint(1, min(3, len(names))))
        args = dict(base, **{k: rng.choice(choices[k]) for k in keys})
        code, line = run_cli(["run", "evaluate", "--model", model, "--model-args", json.dumps(args), *SMALL,
                              "--no-cache"], capsys)
        assert code in (0, 2), (model, args, line)
        assert code == 0 or (line.startswith("vitlens: error:") and "internal error" not in line), (model, args, line)
        codes.append(code)
    assert 0 in codes and 2 in codes  # the draw reaches both outcomes


def test_timm_resnet_channels_are_an_architecture_argument(capsys):
    sizing = size_model("timm:resnet18", {"channels": [8, 16, 32, 64], "num_classes": 10})
    narrow = load_model("timm:resnet18", channels=[8, 16, 32, 64], num_classes=10)
    assert sizing.params == sum(p.numel() for p in narrow.parameters())  # the meta count is the real count
    code, _ = run_cli(["run", "evaluate", "--model", "timm:resnet18", "--model-args",
                       '{"channels": [8, 16, 32, 64], "num_classes": 10}', *SMALL], capsys)
    assert code == 0
    resnext = {"layers": [1, 1, 1, 1], "cardinality": 4, "base_width": 4, "num_classes": 10}  # a tiny ResNeXt
    assert size_model("timm:resnet50", resnext).params == sum(
        p.numel() for p in load_model("timm:resnet50", **resnext).parameters())
    code, line = run_cli(["run", "evaluate", "--model", "timm:resnet50", "--model-args",
                          json.dumps(dict(resnext, cardinality=1000)), *SMALL], capsys)
    assert code == 2 and "cardinality" in line


# ----------------------------------------------------------------------------- weights and data

def test_non_finite_weights_and_data_are_refused_unless_allowed(tmp_path, capsys):
    model = load_model("demo_resnet", pretrained=True)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    name = next(k for k, v in state.items() if v.is_floating_point())
    state[name][0] = float("nan")
    save_file(state, str(tmp_path / "nan.safetensors"))
    code, line = run_cli(["run", "evaluate", "--checkpoint", str(tmp_path / "nan.safetensors"), *SMALL], capsys)
    assert code == 2 and "non-finite weights" in line and name in line
    assert run_cli(["run", "evaluate", "--checkpoint", str(tmp_path / "nan.safetensors"), *SMALL,
                    "--allow-nonfinite"], capsys)[0] == 0
    x = np.random.default_rng(0).random((8, 3, 32, 32), dtype=np.float32)
    x[5, 0, 0, 0] = np.inf
    np.savez(tmp_path / "bad.npz", x=x, y=np.arange(8) % 10)
    code, line = run_cli(["run", "evaluate", "--dataset", f"tensors:{tmp_path / 'bad.npz'}", *SMALL], capsys)
    assert code == 2 and "non-finite values" in line and "image 5" in line
    assert run_cli(["run", "evaluate", "--dataset", f"tensors:{tmp_path / 'bad.npz'}", *SMALL,
                    "--allow-nonfinite"], capsys)[0] == 0


def test_unreadable_images_in_a_folder_name_the_file(tmp_path, capsys):
    from PIL import Image
    for cls in ("a", "b"):
        (tmp_path / "imgs" / cls).mkdir(parents=True)
        for k in range(3):
            Image.new("RGB", (32, 32), (40 * k, 80, 120)).save(tmp_path / "imgs" / cls / f"{k}.png")
    (tmp_path / "imgs" / "b" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    code, line = run_cli(["run", "evaluate", "--dataset", f"folder:{tmp_path / 'imgs'}", *SMALL,
                          "--model-args", '{"num_classes": 10}'], capsys)
    assert code == 2 and "b/broken.png" in line, line
    (tmp_path / "imgs" / "b" / "broken.png").unlink()
    (tmp_path / "imgs" / "b" / "empty.jpg").write_bytes(b"")
    code, line = run_cli(["run", "evaluate", "--dataset", f"folder:{tmp_path / 'imgs'}", *SMALL], capsys)
    assert code == 2 and "b/empty.jpg" in line, line


def test_a_decompression_bomb_is_refused_without_decoding_it(tmp_path, capsys, monkeypatch):
    from PIL import Image
    (tmp_path / "imgs" / "a").mkdir(parents=True)
    Image.new("L", (4000, 4000)).save(tmp_path / "imgs" / "a" / "bomb.png")  # 16 M pixels, a small file
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1_000_000)  # PIL's bomb check, at a test's scale
    code, line = run_cli(["run", "evaluate", "--dataset", f"folder:{tmp_path / 'imgs'}", *SMALL], capsys)
    assert code == 2 and "a/bomb.png" in line and "decompression bomb" in line, line


# ----------------------------------------------------------------------------- outputs, queues, lists

@pytest.mark.parametrize("out,reason", [("DIR", "is a folder"), ("/proc/nope/x.csv", "does not exist"),
                                        ("x.txt", "must end in"), ("L" * 300 + ".csv", "too long")])
def test_a_bad_out_path_fails_before_computing(out, reason, tmp_path, capsys):
    (tmp_path / "x.csv").mkdir()
    path = str(tmp_path / "x.csv") if out == "DIR" else out if out.startswith("/") else str(tmp_path / out)
    code, line = run_cli(["run", "landscape", "--grid", "51", "--samples", "all", "--out", path], capsys)
    assert code == 2 and reason in line, line
    from vitlens.store import ResultCache
    with ResultCache() as cache:
        assert cache.ls() == []  # refused before the 51x51 grid: nothing computed


def test_a_write_error_after_computing_says_where_the_result_is(tmp_path, capsys, monkeypatch):
    from vitlens.result import Result

    def full(self, path):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(Result, "save", full)
    code, line = run_cli(["run", "variance", *SMALL, "--out", str(tmp_path / "v.csv")], capsys)
    assert code == 2 and "No space left on device" in line and "in the cache" in line


@pytest.mark.parametrize("queue,reason", [("redis://127.0.0.1:1", "cannot be reached"), ("ftp:", "must be redis"),
                                          ("sqlite:/proc/x", "must be redis"),
                                          ("sqlite:///proc/nope/jobs.db", "cannot create")])
def test_a_bad_queue_location_is_one_line(queue, reason, capsys):
    code, line = run_cli(["worker", "--queue", queue, "--once"], capsys)
    assert code == 2 and reason in line, line


def test_the_sqlite_form_the_help_shows_serves_that_file(tmp_path):
    from vitlens.jobs import Queue
    queue = Queue(f"sqlite://{tmp_path}/q/jobs.db")
    assert queue.location == str(tmp_path / "q" / "jobs.db") and (tmp_path / "q" / "jobs.db").is_file()


def test_list_options_are_bounded(capsys):
    code, line = run_cli(["run", "noise", "--frequencies", json.dumps([0.5] * 5000), *SMALL], capsys)
    assert code == 2 and "at most 256" in line
    code, line = run_cli(["run", "noise", "--frequencies", "[0.25, 0.5, 0.25]", *SMALL], capsys)
    assert code == 2 and "repeats" in line
    code, line = run_cli(["run", "findings", "--models", ",".join(f"demo_resnet{'_deep' * 0}{k}" for k in range(200))],
                         capsys)
    assert code == 2 and "at most 8" in line and "VITLENS_MAX_MODELS" in line
    code, line = run_cli(["run", "findings", "--models", "demo_resnet,<script>"], capsys)
    assert code == 2 and "is not a valid value" in line
    code, line = run_cli(["run", "variance", "--checkpoint", "", *SMALL], capsys)
    assert code == 2 and "--checkpoint needs a value" in line
