"""End to end in a real browser: a fresh Streamlit server, Debian's Chromium driven by Playwright.

Opens a deep link on the freshly started server, runs a small job and sees its progress and chart,
switches pages and keeps the selection. Screenshots go to $VITLENS_ARTIFACTS (default artifacts/).
"""
import os
import time
from pathlib import Path
from urllib.parse import quote

import pytest

from load_scenario import BROWSER_FLAGS, CHROMIUM, browser_missing, start_server

SMALL_ALTERNET = '{"depths": [1, 2], "msa": [0, 1], "heads": [1, 2], "widths": [8, 16], "head_dim": 8}'
ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = Path(os.environ.get("VITLENS_ARTIFACTS", ROOT / "artifacts"))
# a host name that reaches this server but is not in .streamlit/config.toml's allowedHosts
FLAGS = BROWSER_FLAGS + ["--host-resolver-rules=MAP outsider.test 127.0.0.1"]

if (why := browser_missing()) is not None:  # one line, not a wall of errors
    pytest.skip(why, allow_module_level=True)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    proc, url = start_server(tmp_path_factory.mktemp("server"))
    yield url
    proc.terminate()
    proc.wait(timeout=20)


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=FLAGS)
        yield b
        b.close()


def shot(page, name):
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def sidebar_text(page):
    """The sidebar's visible text plus the values of its inputs (selectboxes render as inputs)."""
    values = page.eval_on_selector_all('[data-testid="stSidebar"] input',
                                       "els => els.map(e => e.value + ' ' + (e.getAttribute('aria-label') || ''))")
    return page.locator('[data-testid="stSidebar"]').inner_text() + "\n" + "\n".join(values)


def test_deep_link_job_progress_chart_and_page_switch(server, browser):
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    # 1. a deep link on the freshly started server, to a small custom AlterNet (not a demo model, so the
    #    job waits for Run)
    page.goto(f"{server}/Lesion?model=alternet&model_args={quote(SMALL_ALTERNET)}&samples=96&batch_size=32&seed=2",
              timeout=60000)
    page.get_by_role("button", name="Run").wait_for(timeout=60000)
    shot(page, "1_deep_link")
    assert "alternet" in sidebar_text(page) and "head_dim" in sidebar_text(page), sidebar_text(page)
    # 2. run it: the progress bar shows while the worker computes, then the chart
    page.get_by_role("button", name="Run").click()
    page.locator('[data-testid="stProgress"]').first.wait_for(timeout=60000)
    shot(page, "2_progress")
    page.locator('[data-testid="stPlotlyChart"]').first.wait_for(timeout=240000)
    page.get_by_text("Accuracy drop with one block removed").first.wait_for(timeout=30000)
    shot(page, "3_chart")
    # 3. switch pages with the navigation: the selection stays and is back in the URL
    page.locator('[data-testid="stSidebarNav"] a:has-text("Feature variance")').click()
    page.get_by_role("heading", name="Feature-map variance").wait_for(timeout=60000)
    deadline = time.time() + 30  # the sidebar's inputs fill in after the heading on a loaded machine
    while not ("alternet" in sidebar_text(page) and "head_dim" in sidebar_text(page)) and time.time() < deadline:
        page.wait_for_timeout(250)
    assert "alternet" in sidebar_text(page) and "head_dim" in sidebar_text(page), sidebar_text(page)
    page.wait_for_function("() => /[?&]model=alternet(&|$)/.test(window.location.search)", timeout=30000)
    assert "seed=2" in page.url
    shot(page, "4_switched_page")
    page.close()


def test_landing_page_shows_demo_results(server, browser):
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.goto(server, timeout=60000)
    page.locator('[data-testid="stMetric"]').first.wait_for(timeout=180000)
    text = page.locator('[data-testid="stMetric"]').first.inner_text()
    assert "%" in text
    shot(page, "0_landing")
    page.close()


def test_config_file_is_in_force(server, browser):
    """The server runs with the committed .streamlit/config.toml: a host name outside its
    allowedHosts gets the page's HTML but no app (the WebSocket is refused). Adding the name to
    allowedHosts makes this test fail (checked)."""
    page = browser.new_page()
    page.goto(server, timeout=60000)
    page.get_by_role("heading", name="vitlens — how do vision transformers work?").wait_for(timeout=60000)
    outsider = server.replace("127.0.0.1", "outsider.test")
    other = browser.new_page()
    other.goto(outsider, timeout=60000)
    other.wait_for_timeout(8000)
    shot(other, "5_outsider_refused")
    assert other.get_by_role("heading", name="vitlens — how do vision transformers work?").count() == 0
    page.close()
    other.close()


def test_a_newcomers_first_start_draws_every_demo_view_from_the_shipped_results(tmp_path, browser):
    """`vitlens dashboard` as installed (the shipped Results on, an empty user cache): its workers check
    in before any page is opened, and the landing page, Hessian and Loss landscape draw their charts
    with no job queued (the scoreboard included)."""
    from vitlens.jobs import JobManager
    from vitlens.store.shipped import SHIPPED

    os.environ["VITLENS_CACHE_DIR"] = str(tmp_path / "cache")  # this process reads the server's queue
    proc, url = start_server(tmp_path, VITLENS_DEMO_RESULTS=str(SHIPPED), VITLENS_INTERACTIVE_WORKERS="1")
    jobs = JobManager(embedded_workers=0)
    try:
        deadline = time.time() + 90
        while len(jobs.workers()) < 2 and time.time() < deadline:  # no page has run app.py yet
            time.sleep(0.3)
        assert len(jobs.workers()) == 2, jobs.workers()
        for link in ("", "Hessian", "Loss_landscape"):
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(f"{url}/{link}", timeout=60000)
            page.locator('[data-testid="stPlotlyChart"]').first.wait_for(timeout=60000)
            page.get_by_text("precomputed, shipped with vitlens").first.wait_for(timeout=30000)
            page.close()
        assert jobs.jobs() == []
    finally:
        proc.terminate()
        proc.wait(30)
