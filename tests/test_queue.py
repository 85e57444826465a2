"""Durable jobs across processes: a worker restart (SIGTERM) puts the running job back and nothing
is computed twice, a killed worker leaves a failed job (not "running" forever), and two workers
share one Redis queue with each job run once."""
import shutil
import signal
import socket
import subprocess
import time

import pytest

from queue_helpers import sigterm, spec, start_worker, stop, wait_for_workers, wait_until
from vitlens.cache import ResultCache
from vitlens.engine import cached_result
from vitlens.jobs import DONE, FAILED, QUEUED, RUNNING, JobManager

LANDSCAPE = dict(analysis="landscape", samples=64, params={"grid": 7})


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("VITLENS_CACHE_DIR", str(tmp_path / "results"))
    return tmp_path, {"VITLENS_CACHE_DIR": str(tmp_path / "results")}


def _results_by_analysis() -> dict:
    """How many complete Results the cache holds per analysis (partial grids apart)."""
    counts = {}
    with ResultCache() as cache:
        for row in cache.ls():
            counts[row.get("analysis")] = counts.get(row.get("analysis"), 0) + 1
    return counts


def test_sigterm_requeues_the_running_job_and_a_restart_finishes_everything_once(home):
    tmp, env = home
    jobs = JobManager(embedded_workers=0)
    cheap = [jobs.submit(spec(seed=s), session=f"user{s}") for s in (31, 32, 33)]
    grid = jobs.submit(spec(**LANDSCAPE, seed=34), session="user34")
    worker = start_worker(env, "first", tmp)
    try:
        # the cheap lane runs first; then the landscape: stop the worker part way through its grid
        wait_until(lambda: (j := jobs.get(grid.id)).state == RUNNING and j.done >= 8, 150, "grid progress")
        seconds = sigterm(worker)
        print(f"worker stopped {seconds:.2f}s after SIGTERM")
        assert seconds < 10, f"the worker took {seconds:.1f}s to stop"
        stopped = JobManager(embedded_workers=0).get(grid.id)  # as a restarted dashboard sees it
        assert stopped.state == QUEUED and "back in the queue" in stopped.message
        assert all(jobs.get(j.id).state == DONE for j in cheap)
        assert jobs.pending() == 1 and cached_result(spec(**LANDSCAPE, seed=34)) is None
        worker = start_worker(env, "second", tmp)
        final = jobs.wait(grid, timeout=150)
    finally:
        stop(worker)
    assert final.state == DONE, final.error
    assert final.runs == 2 and final.worker == "second"
    assert all(jobs.get(j.id).runs == 1 and not jobs.get(j.id).from_cache for j in cheap)
    resumed = cached_result(spec(**LANDSCAPE, seed=34)).meta["summary"]["resumed_points"]
    assert 8 <= resumed < 49, resumed  # the second run continued the partly done grid
    assert _results_by_analysis() == {"variance": 3, "landscape": 1}  # nothing computed twice, no partial left


def test_a_killed_worker_leaves_a_failed_job_not_a_running_one(home, monkeypatch):
    tmp, env = home
    monkeypatch.setenv("VITLENS_JOB_STALE_S", "4")
    jobs = JobManager(embedded_workers=0)
    job = jobs.submit(spec(**LANDSCAPE, seed=41))
    worker = start_worker(env, "doomed", tmp)
    try:
        wait_until(lambda: jobs.get(job.id).state == RUNNING, 120, "the job to start")
        worker.send_signal(signal.SIGKILL)
        worker.wait(10)
        failed = wait_until(lambda: (j := jobs.get(job.id)).state == FAILED and j, 20, "the job to read failed")
    finally:
        stop(worker)
    assert "worker stopped during the job" in failed.error
    assert not failed.active and jobs.submit(spec(**LANDSCAPE, seed=41)).id != job.id  # Try again queues anew


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def redis_url(tmp_path):
    server = shutil.which("redis-server")
    if server is None:
        pytest.skip("redis-server is not installed (apt-get install redis-server) — multi-worker test skipped")
    port = _free_port()
    proc = subprocess.Popen([server, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                             "--daemonize", "no", "--dir", str(tmp_path)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    url = f"redis://127.0.0.1:{port}/0"

    def up():
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return True
        except OSError:
            return False
    wait_until(up, 20, "redis-server")
    yield url
    proc.terminate()
    proc.wait(10)


def test_two_workers_share_one_redis_queue_and_each_job_runs_once(home, redis_url, monkeypatch):
    tmp, env = home
    monkeypatch.setenv("VITLENS_QUEUE", redis_url)
    env = dict(env, VITLENS_QUEUE=redis_url)
    jobs = JobManager()  # a Redis queue: no embedded workers
    assert jobs._workers == []
    workers = [start_worker(env, name, tmp) for name in ("gpu-a", "gpu-b")]
    try:
        wait_for_workers(jobs, ["gpu-a", "gpu-b"])
        submitted = [jobs.submit(spec(seed=s, samples=48), session=f"u{s % 3}") for s in range(51, 57)]
        assert jobs.submit(spec(seed=51, samples=48), session="u9").id == submitted[0].id  # joins
        finished = [jobs.wait(j, timeout=150) for j in submitted]
    finally:
        for w in workers:
            stop(w)
    assert all(j.state == DONE for j in finished), [j.error for j in finished]
    assert all(j.runs == 1 and not j.from_cache for j in finished)  # each job ran once
    assert {j.worker for j in finished} == {"gpu-a", "gpu-b"}  # both took jobs from the one queue
    assert _results_by_analysis() == {"variance": 6}
