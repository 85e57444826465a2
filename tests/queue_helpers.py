"""Start and stop real `vitlens worker` processes for the queue tests."""
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from vitlens.engine import JobSpec

ROOT = Path(__file__).resolve().parents[1]


def spec(**kw):
    base = dict(analysis="variance", model="demo_resnet", samples=32, batch_size=16, device="cpu")
    base.update(kw)
    return JobSpec(**base)


def start_worker(env: dict, name: str, log_dir: Path, **extra) -> subprocess.Popen:
    """`python -m vitlens worker --name NAME` with ENV (cache folder, queue) and one thread."""
    full = dict(os.environ, OMP_NUM_THREADS="1", VITLENS_HEARTBEAT_S="1", **env, **extra)
    log = open(log_dir / f"{name}.log", "ab")
    proc = subprocess.Popen([sys.executable, "-m", "vitlens", "worker", "--name", name], cwd=ROOT, env=full,
                            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
    log.close()
    proc.name, proc.log = name, log_dir / f"{name}.log"
    return proc


def wait_for_workers(jobs, names, timeout=90.0) -> None:
    """Until every worker in NAMES has written its heartbeat (they import torch first)."""
    end = time.time() + timeout
    while time.time() < end:
        if set(names) <= {w["name"] for w in jobs.workers()}:
            return
        time.sleep(0.2)
    raise AssertionError(f"workers {names} did not check in within {timeout}s")


def sigterm(proc: subprocess.Popen, timeout: float = 20.0) -> float:
    """SIGTERM PROC and return the seconds it took to exit."""
    start = time.perf_counter()
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout)
    return time.perf_counter() - start


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def wait_until(predicate, timeout: float, what: str, poll: float = 0.1):
    end = time.time() + timeout
    while time.time() < end:
        value = predicate()
        if value:
            return value
        time.sleep(poll)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")
