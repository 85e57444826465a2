"""Experiments: one declaration trains and analyses every kept checkpoint, resumes after a kill, and
gives one table across runs. Checked against independent computations: a plain forward pass over a
kept checkpoint, per-class counts from the definition, an uninterrupted run for a resumed one."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import Subset

from vitlens.data import load_data, per_class_indices
from vitlens.experiments import experiment, parse
from vitlens.errors import VitlensError
from vitlens.jobs import JobManager
from vitlens.models import load_checkpoint, load_model
from vitlens.store import ResultCache
from vitlens.training.recipes import recipe
from vitlens.training.trainer import fit, plan

ROOT = Path(__file__).resolve().parents[1]

EXAMPLE = """\
name: data-size-tiny
dataset: digits
models: [demo_vit, demo_resnet]
fractions: [0.1, 1.0]
seeds: [0]
train: {recipe: noaug, budget: steps, epochs: 3, batch_size: 32}
analyse:
  epochs: [0, 1, 3]
  hessian: {what: spectrum, minibatch: 16, minibatches: 2}
  evaluate: {}
"""


def _env(tmp_path: Path, **more) -> dict:
    return dict(os.environ, VITLENS_CACHE_DIR=str(tmp_path / "cache"), VITLENS_EXPERIMENT_ROOT=str(tmp_path / "root"),
                VITLENS_DEMO_RESULTS="off", VITLENS_INTERACTIVE_WORKERS="0", **more)


def _vitlens(env: dict, *args, timeout: float = 900) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "vitlens", *args], env=env, capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT)


def _test_accuracy(checkpoint: Path, model_name: str) -> tuple[float, float]:
    """Accuracy and NLL of a kept checkpoint on the test split, by a plain forward pass."""
    model = load_model(model_name, pretrained=False)
    load_checkpoint(model, checkpoint)
    model.eval()
    data = load_data("digits", split="test", model=model)
    x = torch.stack([data[i][0] for i in range(len(data))])
    y = torch.tensor([int(data[i][1]) for i in range(len(data))])
    with torch.no_grad():
        logits = model(x)
    return float((logits.argmax(1) == y).float().mean()), float(F.cross_entropy(logits, y))


def test_the_example_runs_end_to_end(tmp_path, monkeypatch):
    """The issue's example, as written: four cells, three kept epochs each, one table."""
    declaration = tmp_path / "tiny.yaml"
    declaration.write_text(EXAMPLE)
    env = _env(tmp_path)
    run = _vitlens(env, "experiment", "run", str(declaration))
    assert run.returncode == 0, run.stderr
    assert "4/4 cells done" in run.stderr
    out = tmp_path / "t.csv"
    show = _vitlens(env, "experiment", "show", str(declaration), "--out", str(out))
    assert show.returncode == 0, show.stderr
    table = pd.read_csv(out)
    assert len(table) == 4 * 3 and set(table["status"]) == {"done"}
    for column in ("model", "model_args", "fraction", "recipe", "seed", "epoch", "step", "train_nll", "test_error",
                   "test_nll", "ece", "nep", "ape", "max_eigenvalue", "accuracy"):
        assert column in table, column
    # equal optimiser steps whatever the fraction (budget: steps): 1437 // 32 = 44 per epoch
    train_size = len(load_data("digits", split="train"))
    for epoch, steps in table.groupby("epoch")["step"]:
        assert set(steps) == {epoch * (train_size // 32)}
    assert table["nep"].between(0, 1).all() and (table["max_eigenvalue"] >= table["ape"] - 1e-9).all()
    # the table's numbers are the checkpoints': a plain forward pass over one kept file
    row = table[(table["model"] == "demo_resnet") & (table["fraction"] == 0.1) & (table["epoch"] == 3)].iloc[0]
    monkeypatch.setenv("VITLENS_CACHE_DIR", env["VITLENS_CACHE_DIR"])
    monkeypatch.setenv("VITLENS_EXPERIMENT_ROOT", env["VITLENS_EXPERIMENT_ROOT"])
    sweep = experiment(str(declaration))
    folder = next((tmp_path / "root").glob("demo_resnet_f0.1_*"))
    accuracy, nll = _test_accuracy(folder / "epoch_003.safetensors", "demo_resnet")
    assert row["test_accuracy"] == pytest.approx(accuracy, abs=1e-9)
    assert row["accuracy"] == pytest.approx(accuracy, abs=1e-9)  # the evaluate analysis' summary
    assert row["test_nll"] == pytest.approx(nll, rel=1e-5)
    assert [s.state for s in sweep.status()] == ["done"] * 4
    shown = _vitlens(env, "experiment", "show", str(declaration), "--claims", "--figures", str(tmp_path / "figs"))
    assert shown.returncode == 0, shown.stderr
    assert sorted(p.name for p in (tmp_path / "figs").iterdir()) == ["01_spectrum_over_epochs.html",
                                                                     "02_error_vs_train_nll.html"]
    assert "data_size_early_nep" in shown.stdout and "not_overfitting" in shown.stdout
    again = _vitlens(env, "experiment", "run", str(declaration))  # a second run reports done, computes nothing
    assert again.returncode == 0 and "4/4 cells done" in again.stderr


DECLARATION = {"name": "resume", "dataset": "digits", "models": ["demo_resnet"], "fractions": [0.25],
               "train": {"recipe": "noaug", "budget": "epochs", "epochs": 4, "batch_size": 32, "lr": 2e-3,
                         "warmup_epochs": 1},
               "analyse": {"epochs": "all", "evaluate": {}, "hessian": {"what": "topk", "top_k": 2, "samples": 64}}}


def test_a_killed_sweep_resumes_where_it_stopped_and_ends_as_an_uninterrupted_one(tmp_path):
    declaration = tmp_path / "resume.yaml"
    declaration.write_text(json.dumps(DECLARATION))  # JSON is YAML
    env = _env(tmp_path / "killed", VITLENS_JOB_STALE_S="3")
    proc = subprocess.Popen([sys.executable, "-m", "vitlens", "experiment", "run", str(declaration)], env=env,
                            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    root = tmp_path / "killed" / "root"
    deadline = time.time() + 300
    while time.time() < deadline and not list(root.glob("*/epoch_002.safetensors")):
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)  # the command and its worker, mid-run
    proc.wait()
    folder = next(root.glob("demo_resnet_*"))
    kept = {p.name: p.stat().st_mtime_ns for p in folder.glob("epoch_*.safetensors")}
    assert "epoch_002.safetensors" in kept and "epoch_004.safetensors" not in kept
    with ResultCache(tmp_path / "killed" / "cache") as cache:
        before = {r["key"]: r["created"] for r in cache.ls()}
    assert before, "nothing was cached before the kill"

    rerun = _vitlens(env, "experiment", "run", str(declaration))
    assert rerun.returncode == 0, rerun.stderr
    with ResultCache(tmp_path / "killed" / "cache") as cache:
        after = {r["key"]: r["created"] for r in cache.ls()}
    assert all(after.get(key) == created for key, created in before.items()), "a finished analysis was recomputed"
    assert {p.name: p.stat().st_mtime_ns for p in folder.glob("epoch_*.safetensors") if p.name in kept} == kept
    computed_again = len(set(after) - set(before))
    assert 0 < computed_again < len(after)

    straight = _env(tmp_path / "straight")
    assert _vitlens(straight, "experiment", "run", str(declaration)).returncode == 0
    resumed_table = tmp_path / "resumed.csv"
    straight_table = tmp_path / "straight.csv"
    assert _vitlens(env, "experiment", "show", str(declaration), "--out", str(resumed_table)).returncode == 0
    assert _vitlens(straight, "experiment", "show", str(declaration), "--out", str(straight_table)).returncode == 0
    timing = [c for c in pd.read_csv(straight_table).columns if "seconds" in c]
    pd.testing.assert_frame_equal(pd.read_csv(resumed_table).drop(columns=timing),
                                  pd.read_csv(straight_table).drop(columns=timing))


def test_resumed_training_equals_uninterrupted_training(tmp_path):
    """Killed after epoch 1 and resumed into a fresh model object, the weights after epoch 3 are the
    uninterrupted run's, bit for bit (augmentation, mixup, cutmix and stochastic depth included)."""
    rec = recipe({"recipe": "paper", "batch_size": 16, "lr": 1e-3, "warmup_epochs": 1})
    train = load_data("digits", split="train", augment="randaugment")
    clean = load_data("digits", split="train")
    test = load_data("digits", split="test", samples=64)
    indices = per_class_indices(clean.labels(), 0.05, 0)
    schedule = plan("epochs", 3, rec.batch_size, len(indices), len(clean), [0, 1, 2, 3])

    def model():
        torch.manual_seed(0)
        return load_model("demo_resnet", pretrained=False, drop_path_rate=0.1)

    def run(folder, net, on_checkpoint=None):
        return fit(net, train, indices, Subset(clean, indices), test, rec, schedule, folder, seed=0, num_classes=10,
                   device=torch.device("cpu"), on_checkpoint=on_checkpoint)

    straight = model()
    history = run(tmp_path / "a", straight)

    class Killed(Exception):
        pass

    def kill_after_epoch_1(epoch, path):
        if epoch == 1:
            raise Killed

    with pytest.raises(Killed):
        run(tmp_path / "b", model(), kill_after_epoch_1)
    torch.manual_seed(123)  # another process: other RNG state, another initialisation
    resumed = load_model("demo_resnet", pretrained=False, drop_path_rate=0.1)
    resumed_history = run(tmp_path / "b", resumed)
    for (name, a), b in zip(straight.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), name
    assert [r["test_nll"] for r in history] == [r["test_nll"] for r in resumed_history]
    assert sorted(p.name for p in (tmp_path / "b").glob("epoch_*")) == [f"epoch_00{e}.safetensors" for e in range(4)]


def test_per_class_subsample_is_exact():
    labels = torch.tensor([0] * 50 + [1] * 31 + [2] * 7 + [3] * 1)
    for fraction in (0.1, 0.5, 1.0):
        chosen = per_class_indices(labels, fraction, seed=3)
        counts = np.bincount(labels[chosen].numpy(), minlength=4)
        expected = [max(1, int(n * fraction)) for n in (50, 31, 7, 1)]  # the authors' int(size * ratio), at least 1
        assert counts.tolist() == expected
        assert chosen == sorted(set(chosen))
    assert per_class_indices(labels, 0.5, 3) == per_class_indices(labels, 0.5, 3)
    assert per_class_indices(labels, 0.5, 3) != per_class_indices(labels, 0.5, 4)


BAD = [
    ({"modles": ["demo_vit"]}, "unknown key 'modles'"),
    ({"models": ["no_such_model"]}, "no_such_model"),
    ({"models": ["demo_vit"], "fractions": [0.0]}, "fractions"),
    ({"models": ["demo_vit"], "analyse": {"hessian": {"minibatch": 0}}}, "--minibatch must be at least 1"),
    ({"models": ["demo_vit"], "analyse": {"nosuch": {}}}, "unknown analysis 'nosuch'"),
    ({"models": ["demo_vit"], "analyse": {"epochs": [-1]}}, "analyse.epochs"),
    ({"models": ["demo_vit"], "train": {"epochs": 0}}, "train.epochs"),
    ({"models": ["demo_vit"], "train": {"lr": "fast"}}, "train.lr"),
    ({"models": ["demo_vit"], "train": {"recipe": "nosuch"}}, "unknown recipe"),
    ({"models": ["demo_vit", "demo_resnet"], "seeds": [0, 1, 2]}, "VITLENS_MAX_CELLS"),
    ({"models": [{"name": "demo_vit", "args": {"checkpoint_path": "/etc/passwd"}}]}, "not an architecture argument"),
]


@pytest.mark.parametrize("declaration,message", BAD)
def test_a_bad_declaration_is_one_line_and_queues_nothing(declaration, message, tmp_path, monkeypatch):
    monkeypatch.setenv("VITLENS_MAX_CELLS", "4")
    path = tmp_path / "bad.yaml"
    path.write_text(json.dumps(dict({"name": "bad"}, **declaration)))
    env = _env(tmp_path, VITLENS_MAX_CELLS="4")
    result = _vitlens(env, "experiment", "run", str(path))
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], lines
    with pytest.raises(VitlensError, match=message.split("'")[0]):
        parse(dict({"name": "bad"}, **declaration))
    monkeypatch.setenv("VITLENS_CACHE_DIR", str(tmp_path / "cache"))
    assert not (tmp_path / "cache").exists() or JobManager(embedded_workers=0).jobs() == []


@pytest.mark.parametrize("analysis", ["evaluate", "variance"])
def test_every_analysis_runs_over_a_checkpoint_folder_with_an_epoch_filter(analysis, tmp_path):
    """`--checkpoints DIR --checkpoint-epochs [0, 2]` for any analysis of one model state: each epoch its
    own cached request (a second run with more epochs computes only the new ones), one Result."""
    from vitlens.cli import main
    from vitlens.engine import JobSpec, run
    from vitlens.train import train
    torch.manual_seed(0)
    train(load_model("demo_resnet", pretrained=False), epochs=2, batch_size=64, subsample=0.1,
          out_dir=tmp_path / "run", log=lambda _: None)
    spec = JobSpec(analysis, model="demo_resnet", model_args={"pretrained": False}, samples=64, device="cpu",
                   params={"checkpoints": str(tmp_path / "run"), "checkpoint_epochs": [0]})
    first, _ = run(spec)
    with ResultCache() as cache:
        before = {r["key"]: r["created"] for r in cache.ls()}
    both, cached = run(JobSpec(**dict(spec.to_dict(), params=dict(spec.params, checkpoint_epochs=[0, 2]))))
    assert not cached and sorted(both.frame["epoch"].unique()) == [0, 2]
    with ResultCache() as cache:
        after = {r["key"]: r["created"] for r in cache.ls()}
    assert all(after[k] == v for k, v in before.items())  # epoch 0 was not computed again
    assert len(set(after) - set(before)) == 2  # epoch 2, and the stacked Result
    if analysis == "evaluate":
        data = load_data("digits", samples=64)
        for epoch in (0, 2):
            model = load_model("demo_resnet", pretrained=False)
            load_checkpoint(model, tmp_path / "run" / f"epoch_{epoch:03d}.safetensors")
            with torch.no_grad():
                logits = model.eval()(torch.stack([data[i][0] for i in range(len(data))]))
            accuracy = float((logits.argmax(1) == torch.stack([data[i][1] for i in range(len(data))])).float().mean())
            rows = both.frame[(both.frame["epoch"] == epoch) & (both.frame["metric"] == "accuracy")]
            assert rows["value"].iloc[0] == pytest.approx(accuracy)
    assert main(["run", analysis, "--model", "demo_resnet", "--checkpoints", str(tmp_path / "run"),
                 "--checkpoint-epochs", "[7]", "--out", str(tmp_path / "x.csv")]) == 2


def test_detach_queues_the_cells_for_the_workers_and_cancel_stops_them(tmp_path):
    declaration = tmp_path / "d.yaml"
    declaration.write_text(json.dumps(dict(DECLARATION, fractions=[0.25, 0.5])))
    env = _env(tmp_path, VITLENS_EMBEDDED_WORKERS="0")  # no worker here: the queue keeps them
    queued = _vitlens(env, "experiment", "run", str(declaration), "--detach")
    assert queued.returncode == 0 and "2 cells queued" in queued.stderr, queued.stderr
    status = _vitlens(env, "experiment", "status", str(declaration))
    assert status.stdout.count("queued") == 2, status.stdout
    again = _vitlens(env, "experiment", "run", str(declaration), "--detach")  # the same keys: joins, queues nothing new
    assert again.returncode == 0
    cancel = _vitlens(env, "experiment", "cancel", str(declaration))
    assert "cancelled 2 cells" in cancel.stdout
    status = _vitlens(env, "experiment", "status", str(declaration))
    assert status.stdout.count("  cancelled  ") == 2, status.stdout
