"""A request's memory, estimated from a build on the meta device and the analysis' declared
footprint, against measured peaks; a request over the budget is refused with one line."""
import importlib.util
import json
from pathlib import Path

import pytest
import torch

from vitlens.budget import estimate
from vitlens.cli import main
from vitlens.errors import VitlensError
from vitlens.jobs import JobManager, Limits
from vitlens.models import load_model
from vitlens.models.sizing import size_model
from vitlens.request import JobSpec

ROOT = Path(__file__).resolve().parents[1]


def _bench():
    spec = importlib.util.spec_from_file_location("bench_sizing", ROOT / "benchmarks" / "bench_sizing.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("model,args", [("demo_vit", {}), ("demo_alternet", {}),
                                        ("timm:resnet18", {"num_classes": 10, "channels": [8, 16, 32, 64]})])
def test_the_meta_sizing_counts_what_a_real_forward_pass_outputs(model, args):
    sizing = size_model(model, args)
    real = load_model(model, **args).eval()
    outputs = []
    hooks = [m.register_forward_hook(lambda mod, i, o: outputs.append(o.numel()))
             for m in real.modules() if not list(m.children())]
    with torch.no_grad():
        real(torch.randn(1, *sizing.input_size))
    for h in hooks:
        h.remove()
    assert sizing.params == sum(p.numel() for p in real.parameters())
    assert sizing.activations == sum(outputs) and sizing.largest == max(outputs)


def test_the_estimate_is_within_a_factor_two_of_the_measured_peak(monkeypatch, tmp_path):
    """A few of benchmarks/bench_sizing.py's cases (inference and Hessian, a demo and a timm model), each
    measured in a fresh process: peak RSS during `engine.run` minus RSS before it."""
    bench = _bench()
    env = dict(__import__("os").environ, VITLENS_CACHE_DIR=str(tmp_path / "cache"), PYTHONPATH=str(ROOT),
               VITLENS_MAX_MEMORY="1T")
    ratios = {}
    for k in bench.QUICK:
        got = bench.measure(bench.CASES[k], env)
        ratios[f"{bench.CASES[k][0]}/{bench.CASES[k][1]}/{bench.CASES[k][3]}"] = got["estimate"] / got["measured"]
    assert all(0.5 <= r <= 2.0 for r in ratios.values()), ratios


def test_a_request_over_the_budget_is_refused_with_both_numbers(monkeypatch, capsys, tmp_path):
    monkeypatch.setenv("VITLENS_MAX_MEMORY", "256M")
    spec = JobSpec(analysis="hessian", model="demo_vit", batch_size=512, samples=512,
                   params={"what": "topk", "top_k": 1})
    need = estimate(spec)
    assert need.bytes > 256 * 2 ** 20
    with pytest.raises(VitlensError) as refused:
        Limits().check(spec)
    line = str(refused.value)
    assert "VITLENS_MAX_MEMORY" in line and "256.0 MiB" in line and "needs about" in line
    code = main(["run", "hessian", "--what", "topk", "--top-k", "1", "--batch-size", "512", "--samples", "512",
                 "--device", "cpu", "--no-cache"])
    assert code == 2 and "VITLENS_MAX_MEMORY" in capsys.readouterr().err
    jobs = JobManager(str(tmp_path / "queue" / "jobs.db"), embedded_workers=0)
    with pytest.raises(VitlensError, match="VITLENS_MAX_MEMORY"):
        jobs.submit(spec, session="s")
    assert jobs.pending() == 0  # nothing queued
    monkeypatch.setenv("VITLENS_MAX_MEMORY", "64G")
    Limits().check(spec)  # the same request fits a bigger budget


def test_the_declared_footprint_follows_the_options():
    small = estimate(JobSpec(analysis="hessian", model="demo_vit", params={"what": "spectrum", "minibatch": 16}))
    stacked = estimate(JobSpec(analysis="hessian", model="demo_vit",
                               params={"what": "spectrum", "minibatch": 16, "together": 4}))
    assert stacked.batch == 4 * small.batch and stacked.parts["graph"] == 4 * small.parts["graph"]
    points = [estimate(JobSpec(analysis="landscape", model="demo_vit", params={"points_per_pass": n}))
              for n in (1, 4)]
    p = size_model("demo_vit", {}).params
    assert points[1].parts["weights"] - points[0].parts["weights"] == 4 * 6 * p  # 3 more stacked copies x 2
    assert json.dumps(small.parts)  # plain numbers
