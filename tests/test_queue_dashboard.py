"""A real dashboard server starts its embedded worker processes (one for all jobs, one for the quick
views), and stops (with them) within 5 s of SIGTERM."""
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from load_scenario import BROWSER_FLAGS, CHROMIUM, browser_missing, start_server
from queue_helpers import wait_until


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


@pytest.mark.skipif(browser_missing() is not None, reason=str(browser_missing()))
def test_dashboard_runs_its_worker_and_stops_within_5s_of_sigterm(tmp_path):
    from playwright.sync_api import sync_playwright
    proc, url = start_server(tmp_path, "pages/9_Jobs.py", OMP_NUM_THREADS="1", VITLENS_INTERACTIVE_WORKERS="1")
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=BROWSER_FLAGS)
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
