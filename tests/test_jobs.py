"""The job manager: identical requests join, errors stay one line, cancel, and torchrun jobs."""
import json

import pytest

from vitlens.engine import JobSpec, cached_result, run
from vitlens.jobs import CANCELLED, DONE, FAILED, JobManager


def spec(**kw):
    base = dict(analysis="variance", model="demo_resnet", samples=32, batch_size=16, device="cpu")
    base.update(kw)
    return JobSpec(**base)


def test_identical_requests_join_and_fill_the_cache():
    jobs = JobManager(workers=1)
    first, second = jobs.submit(spec()), jobs.submit(spec())
    assert first is second and first.requests == 2
    jobs.wait(first)
    assert first.state == DONE and cached_result(spec()) is not None


def test_failure_is_one_line_and_next_job_works():
    jobs = JobManager(workers=1)
    bad = jobs.wait(jobs.submit(spec(model="timm:no_such_net")))
    assert bad.state == FAILED and "unknown timm model" in bad.error and "\n" not in bad.error
    good = jobs.wait(jobs.submit(spec(seed=1)))
    assert good.state == DONE


def test_cancel_a_queued_job():
    jobs = JobManager(workers=1)
    running = jobs.submit(spec(analysis="cka", samples=256, seed=5))
    queued = jobs.submit(spec(seed=6))
    assert jobs.cancel(queued.id)
    jobs.wait(running)
    assert queued.state == CANCELLED and cached_result(spec(seed=6)) is None


def test_worker_runs_sharded_analyses_with_torchrun(monkeypatch):
    monkeypatch.setenv("VITLENS_RANKS", "2")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    request = spec(analysis="hessian", samples=64, params={"what": "spectrum", "top_k": 2, "tol": 1e-3})
    jobs = JobManager(workers=1)
    job = jobs.wait(jobs.submit(request), timeout=300)
    assert job.state == DONE, job.error
    two = cached_result(request)
    assert two is not None and two.meta["summary"]["ranks"] == 2
    one, _ = run(request, use_cache=False)
    # this process computes with 2 threads, the ranks with 1: equal within the Lanczos tolerance (1e-3)
    assert two.frame["eigenvalue"].tolist() == pytest.approx(one.frame["eigenvalue"].tolist(), rel=1e-3)


@pytest.mark.parametrize("samples", [None, 64])
def test_torchrun_arguments_give_back_the_spec(samples):
    """The worker's torchrun command parses back to the same JobSpec, 'all samples' (None) included."""
    from vitlens.cli import build_parser, spec_from_args
    from vitlens.jobs import run_arguments
    request = spec(analysis="hessian", samples=samples, params={"what": "spectrum", "top_k": 2, "tol": 1e-3})
    request = JobSpec(**{**request.to_dict(), "checkpoint": "runs/x/epoch_001.safetensors"})
    assert spec_from_args(build_parser().parse_args(run_arguments(request))) == request


def test_samples_all_and_bad_counts_on_the_command_line(capsys):
    from vitlens.cli import main
    assert main(["run", "evaluate", "--model", "demo_resnet", "--samples", "all", "--no-cache", "--device", "cpu"]) == 0
    out = capsys.readouterr()
    accuracy = json.loads(out.out)["accuracy"]
    assert "6/6" in out.err and abs(accuracy * 359 - round(accuracy * 359)) < 1e-4  # all 359 test digits
    for bad in ("0", "-3", "many"):
        with pytest.raises(SystemExit) as exit_info:
            main(["run", "evaluate", "--model", "demo_resnet", "--samples", bad])
        assert exit_info.value.code == 2
