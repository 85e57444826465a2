"""A real dashboard server starts its embedded worker processes (one for all jobs, one for the quick
views), and stops (with them) within 5 s of SIGTERM; without sign-in its job limit follows the browser."""
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from load_scenario import BROWSER_FLAGS, CHROMIUM, HEAVY_LINK, browser_missing, start_server
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


@pytest.mark.skipif(browser_missing() is not None, reason=str(browser_missing()))
def test_tabs_of_one_browser_share_the_job_limit_and_another_browser_does_not(tmp_path):
    """Without sign-in the per-user limit counts a browser (the token in Streamlit's XSRF cookie), not
    a tab. Limit 1 and no worker, so jobs stay queued: a second tab of the same browser asking for
    another landscape is refused; a tab of another browser (a fresh context: its own cookies) is not,
    and its job is queued. Counting Streamlit sessions instead, the second tab gets through (checked)."""
    from playwright.sync_api import sync_playwright
    os.environ["VITLENS_CACHE_DIR"] = str(tmp_path / "cache")  # this process reads the server's queue
    from vitlens.jobs import JobManager
    proc, url = start_server(tmp_path, OMP_NUM_THREADS="1", VITLENS_WORKERS="0", VITLENS_INTERACTIVE_WORKERS="0",
                             VITLENS_MAX_JOBS_PER_SESSION="1")
    jobs = JobManager(embedded_workers=0)
    error = '[data-testid="stAlertContentError"]'
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=BROWSER_FLAGS)
            mine = browser.new_context()
            first = mine.new_page()
            first.goto(f"{url}/{HEAVY_LINK.format(seed=1)}", timeout=120000)
            wait_until(lambda: len(jobs.jobs()) == 1, 120, "the first tab's job")
            second = mine.new_page()
            second.goto(f"{url}/{HEAVY_LINK.format(seed=2)}", timeout=120000)
            second.locator(error).filter(has_text="limit 1").first.wait_for(timeout=120000)
            other = browser.new_context().new_page()
            other.goto(f"{url}/{HEAVY_LINK.format(seed=3)}", timeout=120000)
            wait_until(lambda: len(jobs.jobs()) == 2, 120, "the other browser's job")
            other.wait_for_timeout(1500)
            assert not other.locator(error).filter(has_text="limit").count()
            browser.close()
        queued = sorted(j.spec.seed for j in jobs.jobs())
        assert queued == [1, 3], queued
        sessions = {j.session for j in jobs.jobs()}
        assert len(sessions) == 2 and all(s.startswith("browser:") for s in sessions), sessions
    finally:
        proc.terminate()
        proc.wait(30)
