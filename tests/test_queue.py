"""Durable jobs across processes: a worker restart (SIGTERM) puts the running job back and nothing
is computed twice, a killed worker's job is retried once and then fails (never "running" forever),
a message lost with its worker is queued again, and two workers share one Redis queue with each
job run once."""
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

from queue_helpers import sigterm, spec, start_worker, stop, wait_for_workers, wait_until
from vitlens.store import ResultCache
from vitlens.engine import cached_result
from vitlens.jobs import DONE, FAILED, QUEUED, RUNNING, JobManager, message_args

LANDSCAPE = dict(analysis="landscape", samples=64, params={"grid": 7})
BIG_GRID = dict(LANDSCAPE, params={"grid": 21})  # 441 points, ~9 s idle on 2 cores: past a grid checkpoint (2 s) with time to spare


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("VITLENS_CACHE_DIR", str(tmp_path / "results"))
    return tmp_path, {"VITLENS_CACHE_DIR": str(tmp_path / "results")}


@pytest.fixture
def quick_stale(home, monkeypatch):
    """HOME with a job counting as lost after 3 s without a heartbeat (here and in the workers)."""
    monkeypatch.setenv("VITLENS_JOB_STALE_S", "3")
    tmp, env = home
    return tmp, dict(env, VITLENS_JOB_STALE_S="3")


def _kill_part_way(jobs, job, env, tmp, name: str, done: int, settle: float = 0.0) -> None:
    """Start worker NAME, SIGKILL it once it has done DONE grid points of JOB (and SETTLE s more)."""
    worker = start_worker(env, name, tmp)
    try:
        wait_until(lambda: (j := jobs.get(job.id)).state == RUNNING and j.worker == name and j.done >= done,
                   150, f"{name} to be part way through the grid")
        time.sleep(settle)
        assert jobs.get(job.id).state == RUNNING
        worker.send_signal(signal.SIGKILL)
        worker.wait(10)
    finally:
        stop(worker)


def _results_by_analysis() -> dict:
    """How many complete Results the cache holds per analysis (partial grids apart)."""
    counts = {}
    with ResultCache() as cache:
        for row in cache.ls():
            counts[row.get("analysis")] = counts.get(row.get("analysis"), 0) + 1
    return counts


def test_sigterm_requeues_the_running_job_and_a_restart_finishes_everything_once(home):
    """Five jobs; SIGTERM the worker during the first grid, reopen the queue as a restarted dashboard
    does, start a new worker: all five finish, none computed twice, the partly done grid resumes."""
    tmp, env = home
    jobs = JobManager(embedded_workers=0)
    cheap = [jobs.submit(spec(seed=s), session=f"user{s}") for s in (31, 32, 33)]
    grid = jobs.submit(spec(**LANDSCAPE, seed=34), session="user34")
    small = jobs.submit(spec(analysis="landscape", samples=32, params={"grid": 5}, seed=35), session="user35")
    worker = start_worker(env, "first", tmp)
    try:
        # the cheap lane runs first; then the landscape: stop the worker part way through its grid
        wait_until(lambda: (j := jobs.get(grid.id)).state == RUNNING and j.done >= 8, 150, "grid progress")
        seconds = sigterm(worker)
        print(f"worker stopped {seconds:.2f}s after SIGTERM")
        assert seconds < 10, f"the worker took {seconds:.1f}s to stop"
        jobs = JobManager(embedded_workers=0)  # as a restarted dashboard sees the queue
        stopped = jobs.get(grid.id)
        assert stopped.state == QUEUED and "back in the queue" in stopped.message
        assert all(jobs.get(j.id).state == DONE for j in cheap) and jobs.get(small.id).state == QUEUED
        assert jobs.pending() == 2 and cached_result(spec(**LANDSCAPE, seed=34)) is None
        worker = start_worker(env, "second", tmp)
        final = [jobs.wait(j, timeout=150) for j in (grid, small)]
    finally:
        stop(worker)
    assert [j.state for j in final] == [DONE, DONE], [j.error for j in final]
    assert final[0].runs == 2 and final[0].worker == "second" and final[1].runs == 1
    assert all(jobs.get(j.id).runs == 1 and not jobs.get(j.id).from_cache for j in cheap)
    resumed = cached_result(spec(**LANDSCAPE, seed=34)).meta["summary"]["resumed_points"]
    assert 8 <= resumed < 49, resumed  # the second run continued the partly done grid
    assert _results_by_analysis() == {"variance": 3, "landscape": 2}  # nothing computed twice, no partial left


def test_a_killed_worker_s_job_is_retried_once_then_fails(quick_stale):
    """SIGKILL mid-job: the next worker's sweep retries it (the grid resumes); killed again: failed."""
    tmp, env = quick_stale
    jobs = JobManager(embedded_workers=0)
    job = jobs.submit(spec(**LANDSCAPE, seed=41))
    for n, name in enumerate(("doomed", "doomed-too")):
        _kill_part_way(jobs, job, env, tmp, name, done=4)
        if n == 0:  # as a dashboard sees it before a worker sweeps: queued for a retry, not running
            stale = wait_until(lambda: (j := jobs.get(job.id)).state == QUEUED and j, 20, "the job to read queued")
            assert "retried once" in stale.message
    wait_until(lambda: jobs.get(job.id).state == FAILED, 20, "the job to read failed")  # before any sweep
    last = start_worker(env, "last", tmp)
    try:
        wait_until(lambda: jobs.records.get("run", job.id)["state"] == FAILED, 60, "a sweep to record the failure")
        time.sleep(2)  # the sweep that failed it queued nothing: the worker stays idle
        failed = jobs.get(job.id)
        assert jobs.get(job.id).runs == 2 and jobs.pending() == 0
    finally:
        stop(last)
    assert "worker stopped during the job twice" in failed.error and failed.lost == 1
    assert "recovered job" in Path(last.log).read_text()
    assert not failed.active and jobs.submit(spec(**LANDSCAPE, seed=41)).id != job.id  # Try again queues anew


def test_a_retried_job_resumes_and_finishes(quick_stale):
    tmp, env = quick_stale
    jobs = JobManager(embedded_workers=0)
    job = jobs.submit(spec(**BIG_GRID, seed=42))
    # past the landscape's next checkpoint of its grid (every 2 s): SIGKILL loses the points after it
    _kill_part_way(jobs, job, env, tmp, "doomed", done=8, settle=2.5)
    worker = start_worker(env, "rescuer", tmp)
    try:
        final = jobs.wait(job, timeout=150)
    finally:
        stop(worker)
    assert final.state == DONE and final.worker == "rescuer" and final.runs == 2 and final.lost == 1, final
    resumed = cached_result(spec(**BIG_GRID, seed=42)).meta["summary"]["resumed_points"]
    assert 8 <= resumed < 441, resumed


def test_a_message_taken_by_a_worker_that_died_is_queued_again_and_duplicates_run_once(quick_stale):
    tmp, env = quick_stale
    jobs = JobManager(embedded_workers=0)
    lost = jobs.submit(spec(seed=61), session="ana")
    twice = jobs.submit(spec(seed=62), session="ben")
    taken = jobs.queue.lanes["interactive"].take()  # a worker killed right after its dequeue
    assert taken.args[1] == lost.id and jobs.pending() == 1
    jobs.enqueue(twice.id, spec(seed=62), 0)  # the same attempt's message twice
    worker = start_worker(env, "rescuer", tmp)
    try:
        finished = [jobs.wait(j, timeout=120) for j in (lost, twice)]
    finally:
        stop(worker)
    assert [j.state for j in finished] == [DONE, DONE], [j.error for j in finished]
    assert [(j.runs, j.lost, j.attempt) for j in finished] == [(1, 0, 1), (1, 0, 0)]
    assert _results_by_analysis() == {"variance": 2} and jobs.pending() == 0


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


def test_a_job_overwritten_by_a_silent_worker_after_its_retry_can_still_be_reaped(home):
    """The race of a worker silent past VITLENS_JOB_STALE_S but alive: a sweep queues attempt 1, the old
    worker's progress write lands a moment later and puts its attempt 0 back (its RUNNING record, a fresh
    heartbeat), so attempt 1's message is dropped as outdated. When that old worker then dies too, the
    job must still be recovered by a later sweep (it used to stay RUNNING for ever: attempt 0's reap
    claim was spent). Records and messages as the workers write them, on the real queue; sweeps at
    chosen clock times."""
    from vitlens.jobs import sweep_lost_jobs
    jobs = JobManager(embedded_workers=0)
    job = jobs.submit(spec(seed=7), session="s")
    lanes = list(jobs.queue.lanes.values())

    def take_message(attempt):  # a worker dequeues the message of ATTEMPT (and runs it, or drops it)
        tasks = [t for q in lanes for t in q.pending()]
        assert [message_args(t)[2] for t in tasks] == [attempt], tasks
        for q in lanes:
            while q.take() is not None:
                pass

    def worker_writes(attempt, beat, lost=0):  # the old worker's `_save`: its whole run record
        jobs.records.put("run", job.id, dict(state=RUNNING, started=t0, finished=None, done=1.0, total=9.0,
                                             message="x=0.1", error=None, from_cache=False, worker="old",
                                             runs=1, attempt=attempt, lost=lost, heartbeat=beat))

    stale, t0, suspects = 60.0, time.time(), {}
    take_message(0)
    worker_writes(0, t0)
    assert sweep_lost_jobs(jobs.queue, jobs.records, stale, suspects, now=t0 + 30) == []  # not stale yet
    assert sweep_lost_jobs(jobs.queue, jobs.records, stale, suspects, now=t0 + 61) == [job.id]  # silent: retry
    assert jobs.records.get("run", job.id)["attempt"] == 1
    worker_writes(0, t0 + 62)  # ... but it was alive, and its write wins
    take_message(1)  # the next worker drops attempt 1 as outdated: the record says 0
    # the old worker dies now: a later sweep must recover the job once more
    assert sweep_lost_jobs(jobs.queue, jobs.records, stale, suspects, now=t0 + 130) == [job.id]
    run = jobs.records.get("run", job.id)
    assert run["state"] == QUEUED and run["attempt"] == 1
    take_message(1)
    # and the rule still holds: a job lost twice by the same record fails instead of a third try
    worker_writes(1, t0 + 131, lost=1)
    assert sweep_lost_jobs(jobs.queue, jobs.records, stale, suspects, now=t0 + 200) == [job.id]
    assert jobs.records.get("run", job.id)["state"] == FAILED
    # trimming the finished job removes its reap claims with it (keyed by heartbeat: found by prefix)
    assert len([k for k in jobs.records.all("reap") if k.startswith(f"{job.id}:")]) == 3
    jobs._keep = 0
    jobs._trim()
    assert jobs.records.get("run", job.id) is None
    assert not [k for k in jobs.records.all("reap") if k.startswith(f"{job.id}:")]


# Long Hessian steps without a progress update (the sweep found stops of 94 s and more): a stop check
# in every Hessian-vector product's batches (`progress.checkpoint`) makes SIGTERM and Cancel act at once.
LONG_HESSIAN = {
    "topk": dict(analysis="hessian", model="demo_vit", samples=512, batch_size=128,
                 params={"what": "topk", "top_k": 5, "tol": 1e-12, "max_steps": 10000}),
    "trace": dict(analysis="hessian", model="demo_vit", samples=512, batch_size=128,
                  params={"what": "trace", "probes": 100000, "estimator": "hutchinson"}),
}


@pytest.mark.parametrize("what", list(LONG_HESSIAN))
def test_sigterm_and_cancel_stop_a_long_hessian_step_within_seconds(home, what):
    tmp, env = home
    jobs = JobManager(embedded_workers=0)
    request = spec(**LONG_HESSIAN[what], seed=5)
    job = jobs.submit(request)
    worker = start_worker(env, "w1", tmp)
    try:
        wait_until(lambda: jobs.get(job.id).state == RUNNING, 120, "the job to start")
        time.sleep(3.0)  # well inside its long step
        start = time.perf_counter()
        worker.send_signal(signal.SIGTERM)
        worker.wait(60)
        stopped = time.perf_counter() - start
    finally:
        stop(worker)
    assert jobs.get(job.id).state == QUEUED  # back in the queue for the next worker
    assert stopped < 10.0, stopped  # at the next product, not at the end of the job
    worker = start_worker(env, "w2", tmp)
    try:
        wait_until(lambda: jobs.get(job.id).state == RUNNING and jobs.get(job.id).worker == "w2", 120,
                   "the job to start again")
        time.sleep(3.0)
        start = time.perf_counter()
        assert jobs.cancel(job.id)
        wait_until(lambda: jobs.get(job.id).state == "cancelled", 60, "the job to stop")
        cancelled = time.perf_counter() - start
    finally:
        stop(worker)
    assert cancelled < 10.0, cancelled
    print(f"{what}: SIGTERM stopped the worker in {stopped:.2f} s, Cancel in {cancelled:.2f} s")


LONG = dict(model="timm:resnet18", model_args={"num_classes": 10}, split="train", samples=1000, batch_size=1)
LONG_JOBS = {  # each runs for half a minute or more on 2 cores
    "evaluate": {}, "variance": {}, "fourier": {}, "lesion": {}, "noise": {}, "cka": {},
    "landscape": {"grid": 21}, "findings": {"models": "timm:resnet18", "minibatches": 8},
}


def test_cancel_stops_every_analysis_within_seconds_and_sigterm_a_nested_request(home):
    """Cancel acts at the next stop check of every analysis (each batch, grid point, sub-request's
    update); SIGTERM stops a findings request inside one of its sub-requests."""
    tmp, env = home
    jobs = JobManager(embedded_workers=0)
    worker = start_worker(env, "w", tmp)
    took = {}
    try:
        for seed, (analysis, params) in enumerate(LONG_JOBS.items()):
            job = jobs.submit(spec(**LONG, analysis=analysis, seed=100 + seed, params=params))
            wait_until(lambda: jobs.get(job.id).state == RUNNING, 120, f"{analysis} to start")
            time.sleep(1.5)
            start = time.perf_counter()
            assert jobs.cancel(job.id)
            wait_until(lambda: not jobs.get(job.id).active, 60, f"{analysis} to stop")
            took[analysis] = time.perf_counter() - start
            assert jobs.get(job.id).state == "cancelled", (analysis, jobs.get(job.id).error)
        job = jobs.submit(spec(**LONG, analysis="findings", seed=200, params=LONG_JOBS["findings"]))
        wait_until(lambda: jobs.get(job.id).state == RUNNING, 120, "findings to start")
        time.sleep(2.0)
        start = time.perf_counter()
        worker.send_signal(signal.SIGTERM)
        worker.wait(60)
        took["findings (SIGTERM)"] = time.perf_counter() - start
    finally:
        stop(worker)
    assert jobs.get(job.id).state == QUEUED
    print("stop latency: " + ", ".join(f"{k} {v:.2f} s" for k, v in took.items()))
    assert max(took.values()) < 10.0, took


def test_a_background_job_yields_to_a_users_job_and_later_finishes_as_if_uninterrupted(home, tmp_path, monkeypatch):
    """The landing page's scoreboard runs in the background. A user's Hessian job that arrives while it
    holds the only worker starts within seconds (the scoreboard goes back to the queue at its next stop
    check, behind the user's job), and the scoreboard then finishes from its cached sub-results with the
    Result of a run that nobody interrupted."""
    import pandas as pd
    import torch
    from vitlens.engine import run

    tmp, env = home
    board = spec(analysis="findings", samples=64, params={"models": "demo_resnet,demo_vit", "minibatches": 2,
                                                          "grid": 7, "noise_frequencies": 5})
    jobs = JobManager(embedded_workers=0)
    worker = start_worker(env, "w", tmp)
    try:
        wait_for_workers(jobs, ["w"])
        bg = jobs.submit(board, session="landing", background=True)
        wait_until(lambda: (j := jobs.get(bg.id)).state == RUNNING and j.done > 0, 120, "the scoreboard to be under way")
        start = time.perf_counter()
        user = jobs.submit(spec(analysis="hessian", seed=3, params={"what": "topk", "top_k": 2}), session="user")
        wait_until(lambda: jobs.get(user.id).state != QUEUED, 60, "the user's job to start")
        waited = time.perf_counter() - start
        paused = jobs.get(bg.id)
        assert paused.state == QUEUED and "paused" in paused.message, (paused.state, paused.message)
        assert jobs.wait(user, 300).state == DONE
        done = jobs.wait(bg, 600)
        assert done.state == DONE and done.runs == 2, (done.state, done.error, done.runs)
        assert done.finished > jobs.get(user.id).finished
    finally:
        stop(worker)
    print(f"the user's Hessian job started {waited:.2f} s after it was submitted")
    assert waited < 10.0  # within seconds, not after the scoreboard (a behavioural bound, not a speed figure)
    resumed = cached_result(board).frame
    monkeypatch.setenv("VITLENS_CACHE_DIR", str(tmp_path / "uninterrupted"))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the worker ran (OMP_NUM_THREADS=1): the same summation order
    try:
        fresh = run(board)[0].frame
    finally:
        torch.set_num_threads(threads)
    pd.testing.assert_frame_equal(resumed[["claim", "model", "verdict"]], fresh[["claim", "model", "verdict"]])
    numbers = resumed.select_dtypes("number").columns
    pd.testing.assert_frame_equal(resumed[numbers], fresh[numbers], rtol=1e-6)
