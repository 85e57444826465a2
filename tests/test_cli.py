"""The `vitlens` command as users run it: real subprocesses, exit codes, one-line errors, the cache."""
import json
import os
import subprocess
import sys

import pandas as pd
import pytest
import torch

from vitlens.models import load_model, read_checkpoint_metadata


def vitlens(*args, env=None, timeout=300):
    full_env = dict(os.environ, **(env or {}))
    proc = subprocess.run([sys.executable, "-m", "vitlens", *args], capture_output=True, text=True,
                          timeout=timeout, env=full_env)
    return proc.returncode, proc.stdout, proc.stderr


def test_models_lists_registry():
    code, out, _ = vitlens("models")
    assert code == 0
    for name in ("vit_ti_cifar", "resnet18_cifar", "swin_ti_cifar", "pit_ti_cifar", "alternet18_cifar",
                 "demo_resnet", "demo_vit", "demo_alternet"):
        assert name in out


def test_datasets_lists_embedded_set():
    code, out, _ = vitlens("datasets")
    assert code == 0
    line = next(ln for ln in out.splitlines() if ln.startswith("digits"))
    assert "True" in line  # available offline


def test_blocks_alternet_table(tmp_path):
    code, out, _ = vitlens("blocks", "--model", "alternet18_cifar", "--out", str(tmp_path / "b.csv"))
    assert code == 0
    table = pd.read_csv(tmp_path / "b.csv")
    for stage in (2, 3, 4):
        kinds = table[table.stage == stage].kind.tolist()
        assert kinds[-2:] == ["conv", "msa"], kinds  # the authors' rule: each stage ends C, M
    assert "stages.3.1" in out and "512x4x4" in out


@pytest.mark.parametrize("args,needle", [
    (["blocks", "--model", "no_such_model"], "unknown model"),
    (["blocks", "--model", "timm:no_such_net"], "unknown timm model"),
    (["blocks", "--model", "demo_resnet", "--model-args", "{num_classes: 3"], "not valid JSON"),
    (["blocks", "--model", "demo_resnet", "--checkpoint", "/nonexistent/w.pt"], "checkpoint not found"),
    (["run", "evaluate", "--model", "demo_resnet", "--dataset", "folder:/nonexistent/imagenet"], "not found"),
    (["run", "evaluate", "--model", "demo_resnet", "--dataset", "cifar10"], "CIFAR-10"),
    (["run", "no_such_analysis", "--model", "demo_resnet"], "unknown analysis"),
    (["run", "evaluate", "--model", "demo_resnet", "--out", "result.xlsx"], "--out must end"),
    (["run", "evaluate", "--model", "demo_resnet", "--device", "cuda:0"] if not torch.cuda.is_available()
     else ["run", "evaluate", "--model", "demo_resnet", "--device", "tpu"], "device"),
    (["run", "evaluate", "--model", "demo_resnet", "--option", "nope=1"], "has no option"),
])
def test_bad_input_exits_2_with_one_line(args, needle, tmp_path):
    code, out, err = vitlens(*args, env={"VITLENS_DATA_ROOT": str(tmp_path / "data")})
    assert code == 2, (out, err)
    assert "Traceback" not in err
    lines = [ln for ln in err.strip().splitlines() if ln.startswith("vitlens: error")]
    assert len(lines) == 1 and needle in lines[0], err


def test_bad_checkpoint_files_exit_2(tmp_path):
    (tmp_path / "junk.pth").write_bytes(b"\x00garbage")
    code, _, err = vitlens("blocks", "--model", "demo_resnet", "--checkpoint", str(tmp_path / "junk.pth"))
    assert code == 2 and "cannot read checkpoint" in err and "Traceback" not in err
    torch.save(load_model("demo_resnet", num_classes=3).state_dict(), tmp_path / "other.pt")
    code, _, err = vitlens("blocks", "--model", "demo_resnet", "--checkpoint", str(tmp_path / "other.pt"))
    assert code == 2 and "shape mismatch" in err and "Traceback" not in err


def test_run_is_served_from_cache_second_time(tmp_path):
    args = ["run", "evaluate", "--model", "demo_resnet", "--dataset", "digits", "--samples", "128",
            "--device", "cpu"]
    code, out1, err1 = vitlens(*args, "--out", str(tmp_path / "a.json"))
    assert code == 0 and "computed" in err1, err1
    code, out2, err2 = vitlens(*args, "--out", str(tmp_path / "b.csv"))
    assert code == 0 and "from cache" in err2, err2
    first = json.loads((tmp_path / "a.json").read_text())
    second = pd.read_csv(tmp_path / "b.csv")
    acc1 = next(r["value"] for r in first["rows"] if r["metric"] == "accuracy")
    assert second.loc[second.metric == "accuracy", "value"].item() == pytest.approx(acc1)
    assert acc1 > 0.9  # the shipped demo ResNet is trained
    code, out, _ = vitlens("cache", "ls")
    assert code == 0 and "evaluate" in out and "demo_resnet" in out
    code, out, _ = vitlens("cache", "clear")
    assert code == 0 and "removed 1" in out
    code, _, err3 = vitlens(*args)
    assert code == 0 and "computed" in err3


def test_train_saves_checkpoint_per_epoch(tmp_path):
    code, out, err = vitlens("train", "--model", "demo_resnet", "--dataset", "digits", "--epochs", "2",
                             "--subsample", "0.25", "--device", "cpu", "--out", str(tmp_path / "run"))
    assert code == 0, err
    assert "epoch 2/2" in out and "test acc" in out
    files = sorted(p.name for p in (tmp_path / "run").iterdir() if not p.name.startswith("."))
    assert files == ["epoch_000.safetensors", "epoch_001.safetensors", "epoch_002.safetensors", "resume.safetensors"]
    meta = read_checkpoint_metadata(tmp_path / "run" / "epoch_002.safetensors")
    assert meta["model"] == "demo_resnet" and meta["epoch"] == 2 and meta["dataset"] == "digits"
    assert 0.0 <= meta["test_accuracy"] <= 1.0
    # the saved checkpoint loads back into the CLI
    code, _, err = vitlens("blocks", "--model", "demo_resnet", "--checkpoint",
                           str(tmp_path / "run" / "epoch_002.safetensors"))
    assert code == 0, err


BAD_INPUTS = [  # the team-server issue's list: each was "internal error" (exit 1) or silently accepted
    (["run", "evaluate", "--model", "demo_resnet", "--dataset", "tensors:{gray}"], "1-channel images"),
    (["run", "evaluate", "--model", "demo_resnet", "--dataset", "tensors:{labels}"], "labels up to 50"),
    (["run", "evaluate", "--model", "demo_resnet", "--dataset", "folder:{folder}"], "no images"),
    (["run", "evaluate", "--model", "demo_resnet", "--bins", "0"], "--bins must be at least 1"),
    (["run", "landscape", "--model", "demo_resnet", "--anchors", "NaN"], "--anchors"),
    (["run", "evaluate", "--model", "demo_resnet", "--seed", "1e20"], "--seed"),
    (["run", "landscape", "--model", "demo_resnet", "--weight-decay", "Infinity"], "finite"),
    (["train", "--model", "demo_resnet", "--epochs", "1", "--lr", "nan", "--out", "{tmp}/run"], "--lr"),
    (["train", "--model", "demo_resnet", "--epochs", "1", "--out", "{afile}"], "is a file"),
    (["blocks", "--model", "demo_resnet", "--model-args", '{{"num_classes": 1e10}}'], "num_classes"),
    (["blocks", "--model", "demo_resnet", "--model-args", '{{"num_classes": -5}}'], "num_classes"),
    (["run", "noise", "--model", "demo_resnet", "--eps", "NaN"], "--eps"),
    (["run", "hessian", "--model", "demo_resnet", "--tol", "NaN"], "--tol"),
    (["run", "hessian", "--model", "demo_resnet", "--tol", "-1"], "--tol must be at least"),
    (["run", "lesion", "--model", "demo_resnet", "--reuse-prefix", "maybe"], "true or false"),
    (["blocks", "--model", "timm:resnet18", "--model-args", '{{"checkpoint_path": "/etc/passwd"}}'],
     "not an architecture argument"),
    (["blocks", "--model", "demo_resnet", "--model-args", "[" * 5000 + "]" * 5000], "nested too deeply"),
]


@pytest.mark.parametrize("args,needle", BAD_INPUTS, ids=[f"{a[0]}-{n[:20]}" for a, n in BAD_INPUTS])
def test_more_bad_input_exits_2_in_process(args, needle, tmp_path, capsys):
    import numpy as np

    from vitlens.cli import main
    np.savez(tmp_path / "gray.npz", x=np.zeros((4, 1, 32, 32), np.float32), y=np.zeros(4, np.int64))
    np.savez(tmp_path / "labels.npz", x=np.zeros((4, 3, 32, 32), np.float32), y=np.array([0, 1, 2, 50]))
    (tmp_path / "folder" / "a").mkdir(parents=True)
    (tmp_path / "folder" / "a" / "notes.txt").write_text("not an image")
    (tmp_path / "afile").write_text("")
    names = dict(gray=tmp_path / "gray.npz", labels=tmp_path / "labels.npz", folder=tmp_path / "folder",
                 afile=tmp_path / "afile", tmp=tmp_path)
    argv = [a.format(**names) for a in args]
    try:
        code = main(argv)
    except SystemExit as exit_:  # argparse's own errors
        code = exit_.code
    err = capsys.readouterr().err
    lines = [ln for ln in err.strip().splitlines() if ln.startswith("vitlens: error")]
    assert code == 2, err
    assert len(lines) == 1 and needle in lines[0], err
