"""A real dashboard server starts its embedded worker processes (one for all jobs, one for the quick
views), and stops (with them) within 5 s of SIGTERM."""
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from queue_helpers import wait_until

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = os.environ.get("VITLENS_CHROMIUM", "/usr/bin/chromium")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _children(pid: int) -> list[int]:
    out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie (exited, not yet reaped by its dead parent) counts as gone
    stat = Path(f"/proc/{pid}/stat")
    return stat.exists() and stat.read_text().split()[2] != "Z"


@pytest.mark.skipif(os.environ.get("VITLENS_SKIP_BROWSER") == "1" or not Path(CHROMIUM).exists(),
                    reason="needs Debian's chromium (apt-get install chromium)")
def test_dashboard_runs_its_worker_and_stops_within_5s_of_sigterm(tmp_path):
    from playwright.sync_api import sync_playwright
    port = _free_port()
    env = dict(os.environ, VITLENS_CACHE_DIR=str(tmp_path / "cache"), VITLENS_CHECKPOINT_ROOT=str(tmp_path / "ckpt"),
               VITLENS_DATA_ROOT=str(tmp_path / "data"), OMP_NUM_THREADS="1")
    log = open(tmp_path / "server.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "streamlit", "run", str(ROOT / "pages/9_Jobs.py"), "--server.headless",
                             "true", "--server.port", str(port), "--server.address", "127.0.0.1",
                             "--browser.gatherUsageStats", "false", "--server.fileWatcherType", "none"],
                            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        url = f"http://127.0.0.1:{port}"

        def healthy():
            try:
                return urllib.request.urlopen(f"{url}/_stcore/health", timeout=2).read() == b"ok"
            except OSError:
                return False
        wait_until(healthy, 90, "streamlit", poll=0.5)
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, headless=True,
                                        args=["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"])
            page = browser.new_page()
            page.goto(url, timeout=60000)
            # the page's first run made the job manager, which started the embedded worker processes
            workers = wait_until(lambda: len(_children(proc.pid)) == 2 and _children(proc.pid), 60,
                                 "the embedded workers")
            page.get_by_text("Workers online: 2").wait_for(timeout=90000)
            browser.close()
        start = time.perf_counter()
        proc.send_signal(signal.SIGTERM)
        proc.wait(20)
        seconds = time.perf_counter() - start
        print(f"dashboard stopped {seconds:.2f}s after SIGTERM")
        assert seconds < 5, f"the dashboard took {seconds:.1f}s to stop"
        wait_until(lambda: not any(_alive(w) for w in workers), 10, "the embedded workers to exit")
    finally:
        if proc.poll() is None:
            proc.kill()
        log.close()
