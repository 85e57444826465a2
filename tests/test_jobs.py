"""The job queue through a real `vitlens worker` process on the SQLite store: submit -> done,
identical requests join, one-line errors, cancel, the limits, the priority lane, JSON-only
messages, and torchrun jobs."""
import json
import sqlite3

import pytest

from queue_helpers import spec, start_worker, stop, wait_for_workers, wait_until
from vitlens.engine import JobSpec, cached_result, run
from vitlens.errors import VitlensError
from vitlens.jobs import CANCELLED, DONE, FAILED, RUNNING, JobManager
from vitlens.jobs.queue import decode
from vitlens.worker import Worker


@pytest.fixture(scope="module")
def shared(tmp_path_factory):
    """One worker process for this module's tests, on its own cache folder and SQLite queue."""
    home = tmp_path_factory.mktemp("queue")
    env = {"VITLENS_CACHE_DIR": str(home / "results")}
    proc = start_worker(env, "w1", home)
    yield env, proc
    stop(proc)


@pytest.fixture
def jobs(shared, monkeypatch):
    env, proc = shared
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    manager = JobManager(embedded_workers=0)
    wait_for_workers(manager, ["w1"])
    assert proc.poll() is None, proc.log.read_text()[-2000:]
    return manager


def test_submit_runs_in_the_worker_and_identical_requests_join(jobs):
    first = jobs.submit(spec(seed=11), session="ana")
    second = jobs.submit(spec(seed=11), session="ben")
    assert second.id == first.id and second.requests == 2
    done = jobs.wait(first, timeout=120)
    assert done.state == DONE, done.error
    assert done.worker == "w1" and not done.from_cache and done.fraction == 1.0
    assert cached_result(spec(seed=11)) is not None
    assert jobs.find(spec(seed=11)).id == first.id


def test_failure_is_one_line_and_next_job_works(jobs, tmp_path):
    with pytest.raises(VitlensError, match="unknown timm model"):  # sized before queueing: never queued
        jobs.submit(spec(model="timm:no_such_net"))
    assert jobs.pending() == 0
    bad = jobs.wait(jobs.submit(spec(dataset=f"tensors:{tmp_path / 'missing.npz'}")), timeout=120)
    assert bad.state == FAILED and "not found" in bad.error and "\n" not in bad.error
    good = jobs.wait(jobs.submit(spec(seed=12)), timeout=120)
    assert good.state == DONE, good.error


def test_cancel_a_running_and_a_queued_job(jobs):
    slow = spec(analysis="landscape", samples=64, seed=13, params={"grid": 9})
    running = jobs.submit(slow, session="ana")
    queued = jobs.submit(spec(analysis="landscape", samples=64, seed=14, params={"grid": 9}), session="ana")
    assert jobs.cancel(queued.id) and jobs.get(queued.id).state == CANCELLED
    wait_until(lambda: (j := jobs.get(running.id)).state == RUNNING and j.done > 0, 120, "the job to start")
    assert jobs.get(running.id).eta() is not None  # time left is known once there is progress
    assert jobs.cancel(running.id)
    final = jobs.wait(running, timeout=60)
    assert final.state == CANCELLED and final.cancel_requested
    assert cached_result(slow) is None and cached_result(spec(analysis="landscape", samples=64, seed=14,
                                                                 params={"grid": 9})) is None
    assert not jobs.cancel(running.id)  # not active any more


def test_limits_refuse_with_a_message(tmp_path, monkeypatch):
    monkeypatch.setenv("VITLENS_CACHE_DIR", str(tmp_path / "results"))  # a queue without workers
    monkeypatch.setenv("VITLENS_MAX_JOBS_PER_SESSION", "2")
    monkeypatch.setenv("VITLENS_MAX_JOBS", "3")
    monkeypatch.setenv("VITLENS_MAX_GRID", "11")
    monkeypatch.setenv("VITLENS_MAX_SAMPLES", "1000")
    monkeypatch.setenv("VITLENS_MAX_CLASSES", "100")
    monkeypatch.setenv("VITLENS_MAX_MINIBATCHES", "50")
    jobs = JobManager(embedded_workers=0)
    for request, words in ((spec(analysis="landscape", params={"grid": 21}), "grid 21 is over this server's limit of 11"),
                           (spec(samples=5000), "samples 5000"),
                           (spec(model="timm:resnet18", model_args={"num_classes": 1000}), "num_classes 1000"),
                           (spec(analysis="hessian", params={"what": "spectrum", "minibatches": 500}), "minibatches 500")):
        with pytest.raises(VitlensError, match=words) as info:
            jobs.submit(request, session="ana")
        assert "\n" not in str(info.value)
    assert jobs.pending() == 0 and jobs.jobs() == []  # refused requests are no queue entries
    jobs.submit(spec(seed=1), session="ana")
    jobs.submit(spec(seed=2), session="ana")
    with pytest.raises(VitlensError, match="you have 2 jobs queued or running"):
        jobs.submit(spec(seed=3), session="ana")
    assert jobs.submit(spec(seed=1), session="ana").requests == 2  # joining a job is always allowed
    jobs.submit(spec(seed=3), session="ben")
    with pytest.raises(VitlensError, match="the job queue is full"):
        jobs.submit(spec(seed=4), session="cyd")
    assert jobs.pending() == 3


def test_cheap_analyses_and_other_sessions_go_first(tmp_path, monkeypatch):
    monkeypatch.setenv("VITLENS_CACHE_DIR", str(tmp_path / "results"))
    jobs = JobManager(embedded_workers=0)
    heavy = jobs.submit(spec(analysis="landscape", params={"grid": 5}), session="ana")
    a1, a2, a3 = (jobs.submit(spec(seed=s), session="ana") for s in (1, 2, 3))
    b1 = jobs.submit(spec(seed=4), session="ben")
    worker = Worker(once=True)
    order = []
    while (taken := worker._take())[1] is not None:
        lane, task = taken
        order.append((lane, task.args[1]))
    # the interactive lane first; in it ben's first job before ana's (she has a job queued already),
    # then hers in order; the landscape last, from the heavy lane
    assert order == [("interactive", b1.id), ("interactive", a1.id), ("interactive", a2.id),
                     ("interactive", a3.id), ("heavy", heavy.id)]
    jobs.submit(spec(analysis="landscape", params={"grid": 5}, seed=9), session="cyd")
    assert Worker(once=True, lanes="interactive")._take() == (None, None)  # an interactive worker leaves it


def test_queue_messages_are_json_not_pickles(tmp_path, monkeypatch):
    monkeypatch.setenv("VITLENS_CACHE_DIR", str(tmp_path / "results"))
    jobs = JobManager(embedded_workers=0)
    job = jobs.submit(spec(seed=7), session="ana")
    with sqlite3.connect(jobs.location) as db:
        (data,), = db.execute("select data from task").fetchall()
        records = dict(db.execute("select key, value from kv").fetchall())
    message = json.loads(data)
    assert message["args"][1] == job.id and JobSpec(**json.loads(message["args"][0])) == spec(seed=7)
    assert all(isinstance(json.loads(v), (dict, str, float)) for v in records.values())
    import pickle
    with pytest.raises(ValueError):
        decode(pickle.dumps({"planted": 1}))
    assert oct((tmp_path / "results" / "queue").stat().st_mode & 0o777) == "0o700"


def test_worker_runs_sharded_analyses_with_torchrun(tmp_path, monkeypatch):
    monkeypatch.setenv("VITLENS_CACHE_DIR", str(tmp_path / "results"))
    jobs = JobManager(embedded_workers=0)
    request = spec(analysis="hessian", samples=64, params={"what": "spectrum", "top_k": 2, "tol": 1e-3})
    job = jobs.submit(request)
    proc = start_worker({"VITLENS_CACHE_DIR": str(tmp_path / "results")}, "ranks2", tmp_path, VITLENS_RANKS="2")
    try:
        job = jobs.wait(job, timeout=300)
    finally:
        stop(proc)
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
    from vitlens.request import request_arguments
    request = spec(analysis="hessian", samples=samples, params={"what": "spectrum", "top_k": 2, "tol": 1e-3})
    request = JobSpec(**{**request.to_dict(), "checkpoint": "runs/x/epoch_001.safetensors"})
    assert spec_from_args(build_parser().parse_args(request_arguments(request))) == request


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


def test_a_worker_drops_messages_that_are_not_jobs_and_keeps_serving(tmp_path, monkeypatch, capfd):
    monkeypatch.setenv("VITLENS_CACHE_DIR", str(tmp_path / "results"))
    jobs = JobManager(embedded_workers=0)
    jobs.queue.lanes["interactive"].put(["{}", 5, "not an attempt"], 0)  # well-formed JSON, wrong arguments
    assert Worker(once=True).serve() == 0
    assert jobs.pending() == 0 and "dropped a bad queue message" in capfd.readouterr().err


def test_a_bad_worker_count_starts_no_worker(tmp_path, monkeypatch):
    """VITLENS_INTERACTIVE_WORKERS is read before any worker starts (a retry must not pile them up)."""
    monkeypatch.setenv("VITLENS_CACHE_DIR", str(tmp_path / "results"))
    monkeypatch.setenv("VITLENS_INTERACTIVE_WORKERS", "two")
    with pytest.raises(VitlensError, match="VITLENS_INTERACTIVE_WORKERS must be a number"):
        JobManager(embedded_workers=1)
    assert not list((tmp_path / "results" / "queue").glob("worker-*.log"))


def test_cancel_withdraws_only_your_own_request(tmp_path, monkeypatch):
    """Two signed-in users wait for one job: one user's Cancel leaves it running for the other; a
    third user cannot stop it; the last one waiting stops it; an admin stops any job."""
    monkeypatch.setenv("VITLENS_CACHE_DIR", str(tmp_path / "results"))
    monkeypatch.setenv("VITLENS_ADMINS", "boss@lab.org")
    jobs = JobManager(embedded_workers=0)
    ana, ben, eve = "user:ana@lab.org", "user:ben@lab.org", "user:eve@lab.org"
    job = jobs.submit(spec(seed=91), session=ana)
    assert jobs.submit(spec(seed=91), session=ben).id == job.id  # ben joins ana's job
    assert not jobs.cancel(job.id, session=eve)  # not eve's
    assert jobs.cancel(job.id, session=ben) and jobs.get(job.id).active  # ana still waits
    assert jobs.get(job.id).sessions == [ana]
    assert not jobs.cancel(job.id, session=ben)  # ben already withdrew
    assert jobs.cancel(job.id, session=ana) and jobs.get(job.id).state == CANCELLED
    other = jobs.submit(spec(seed=92), session=ana)
    assert jobs.cancel(other.id, session="user:boss@lab.org") and jobs.get(other.id).state == CANCELLED
