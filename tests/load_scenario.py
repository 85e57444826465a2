"""A team's load on a real dashboard: a Streamlit server on 127.0.0.1 with its embedded workers,
one browser session flooding heavy jobs and eight teammates opening quick views by deep link.

Used by tests/test_load.py (which asserts no job lost and no error shown) and by
benchmarks/bench_load.py (which repeats it, with and without the interactive worker, for README's
figures). Browsers: Debian's Chromium driven by Playwright; one browser context per user.
"""
from __future__ import annotations

import asyncio
import os
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = os.environ.get("VITLENS_CHROMIUM", "/usr/bin/chromium")
BROWSER_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage"]
QUICK = "samples=64&batch_size=32"
# eight teammates' links: four quick views (page, analysis) on two demo models, each a different request
VIEWS = (("Fourier", "fourier"), ("Feature_variance", "variance"), ("Similarity", "cka"), ("Noise_robustness", "noise"))
MODELS = ("demo_resnet", "demo_vit")
LINK_JOB = {f"{page}?model={model}&{QUICK}": (analysis, model) for page, analysis in VIEWS for model in MODELS}
CHEAP_LINKS = list(LINK_JOB)
HEAVY_LINK = "Loss_landscape?model=demo_resnet&samples=512&batch_size=64&grid=21&seed={seed}"
CHART = '[data-testid="stPlotlyChart"]'
ERRORS = '[data-testid="stException"], [data-testid="stAlertContentError"]'


def browser_missing() -> str | None:
    """Why the browser tests cannot run here (one line), or None."""
    if os.environ.get("VITLENS_SKIP_BROWSER") == "1":
        return "browser tests switched off (VITLENS_SKIP_BROWSER=1)"
    if not Path(CHROMIUM).exists():
        return (f"no browser at {CHROMIUM}: install Debian's chromium (scripts/test.sh does when it may) "
                "or set VITLENS_CHROMIUM")
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(home: Path, script: str = "app.py", launcher: str = "dashboard", **env: str) -> tuple[subprocess.Popen, str]:
    """`vitlens dashboard --app SCRIPT` (LAUNCHER "streamlit": `streamlit run SCRIPT`) on a free loopback
    port with its own cache, checkpoint and data roots; returns (process, base URL) once
    /_stcore/health answers. Its log is HOME/server.log."""
    port = free_port()
    full = dict(os.environ, VITLENS_CACHE_DIR=str(home / "cache"), VITLENS_CHECKPOINT_ROOT=str(home / "ckpt"),
                VITLENS_DATA_ROOT=str(home / "data"), **env)
    log = open(home / "server.log", "w")
    command = ([sys.executable, "-m", "vitlens", "dashboard", "--app", str(ROOT / script)] if launcher == "dashboard"
               else [sys.executable, "-m", "streamlit", "run", str(ROOT / script)])
    proc = subprocess.Popen([*command, "--server.headless", "true", "--server.port", str(port), "--server.address",
                             "127.0.0.1", "--browser.gatherUsageStats", "false", "--server.fileWatcherType", "none"],
                            cwd=ROOT, env=full, stdout=log, stderr=subprocess.STDOUT)
    log.close()
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 90
    while time.time() < deadline:
        try:
            if urllib.request.urlopen(f"{url}/_stcore/health", timeout=2).read() == b"ok":
                return proc, url
        except OSError:
            time.sleep(0.5)
    proc.kill()
    raise RuntimeError(f"streamlit did not start: {(home / 'server.log').read_text()[-2000:]}")


async def _cheap_session(browser, url: str, link: str, timeout_s: float) -> dict:
    """One teammate: open LINK in a fresh context, time until its chart is drawn, count errors shown."""
    context = await browser.new_context(viewport={"width": 1300, "height": 900})
    page = await context.new_page()
    start, start_wall = time.perf_counter(), time.time()
    try:
        await page.goto(f"{url}/{link}", timeout=timeout_s * 1000)
        await page.locator(CHART).first.wait_for(timeout=timeout_s * 1000)
        seconds = time.perf_counter() - start
    except Exception as err:  # noqa: BLE001 - a view that never drew counts as missing, with why
        seconds, missing = None, f"{type(err).__name__}: {str(err).splitlines()[0]}"
    else:
        missing = None
    errors = await page.locator(ERRORS).all_inner_texts()
    await context.close()
    return dict(link=link, seconds=seconds, missing=missing, errors=errors, started=start_wall,
                charted=time.time() if seconds is not None else None)


async def _flood(browser, url: str, heavy: int) -> tuple:
    """One user's session: a heavy deep link, then HEAVY - 1 more landscapes by changing the seed in
    the sidebar (each starts a job by itself: demo models autorun). Returns (context, the error
    messages it was shown: the per-session limit's)."""
    context = await browser.new_context(viewport={"width": 1300, "height": 900})
    page = await context.new_page()
    await page.goto(f"{url}/{HEAVY_LINK.format(seed=1)}", timeout=120000)
    await page.locator('[data-testid="stProgress"]').first.wait_for(timeout=120000)
    seed = page.get_by_role("spinbutton", name="Seed")  # the field has a help button too
    refusals = []
    for n in range(2, heavy + 1):
        await seed.fill(str(n))
        await seed.press("Enter")
        await page.wait_for_function(f"() => /[?&]seed={n}(&|$)/.test(window.location.search)", timeout=60000)
        await page.wait_for_timeout(1500)  # the rerun submits the job, or shows why not
        refusals += await page.locator('[data-testid="stAlertContentError"]').all_inner_texts()
    return context, refusals


async def _scenario(url: str, jobs, heavy: int, timeout_s: float) -> dict:
    from playwright.async_api import async_playwright
    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=CHROMIUM, headless=True, args=BROWSER_FLAGS)
        flood_context, refused = await _flood(browser, url, heavy)
        queued_heavy = [j for j in jobs.jobs() if j.spec.analysis == "landscape"]
        sessions = await asyncio.gather(*(_cheap_session(browser, url, link, timeout_s) for link in CHEAP_LINKS))
        flood_unfinished = sum(j.state != "done" for j in jobs.jobs() if j.spec.analysis == "landscape")
        await flood_context.close()
        await browser.close()
    return dict(sessions=sessions, heavy_jobs=queued_heavy, flood_refusals=refused,
                flood_unfinished=flood_unfinished)


def run_scenario(home: Path, heavy: int = 6, timeout_s: float = 240.0, **env: str) -> dict:
    """Start a server in HOME (ENV: extra variables, e.g. VITLENS_INTERACTIVE_WORKERS), run the load,
    stop it with SIGTERM. Figures: the cheap views' time to chart, jobs lost, errors shown."""
    env = dict(dict(OMP_NUM_THREADS="1", VITLENS_WORKERS="1", VITLENS_INTERACTIVE_WORKERS="1",
                    VITLENS_MAX_JOBS_PER_SESSION="4"), **env)
    os.environ["VITLENS_CACHE_DIR"] = str(home / "cache")  # this process reads the server's queue
    from vitlens.jobs import JobManager
    proc, url = start_server(home, **env)
    jobs = JobManager(embedded_workers=0)
    try:
        out = asyncio.run(_scenario(url, jobs, heavy, timeout_s))
    finally:
        proc.terminate()  # SIGTERM: its workers put a running job back in the queue
        proc.wait(30)
    end = time.time() + 30
    while any(j.state == "running" for j in jobs.jobs()) and time.time() < end:
        time.sleep(0.5)
    after = {j.id: j for j in jobs.jobs()}
    times = [s["seconds"] for s in out["sessions"] if s["seconds"] is not None]
    lost = {j.id for j in out["heavy_jobs"] if j.id not in after} | {j.id for j in after.values() if j.state == "failed"}
    return dict(
        cheap_views=len(CHEAP_LINKS), charts=len(times),
        median_s=round(statistics.median(times), 1) if times else None,
        max_s=round(max(times), 1) if times else None,
        missing=[s["missing"] for s in out["sessions"] if s["missing"]],
        errors_shown=sum(len(s["errors"]) for s in out["sessions"]),
        error_texts=[e for s in out["sessions"] for e in s["errors"]],
        heavy_accepted=len(out["heavy_jobs"]), heavy_refused=len(out["flood_refusals"]),
        flood_unfinished=out["flood_unfinished"],  # heavy jobs not done when the last quick chart drew
        refusals=out["flood_refusals"], jobs_lost=len(lost),
        jobs_done=sum(j.state == "done" for j in after.values()),
        sessions=out["sessions"], phases=_phases(out["sessions"], after.values()),
    )


def _phases(sessions: list, jobs) -> dict:
    """Median seconds of each phase of a quick view: page to job submitted, queue wait, compute,
    job done to chart drawn (the browser's share; here the browsers share the server's cores)."""
    by_request = {(j.spec.analysis, j.spec.model): j for j in jobs}
    rows = []
    for s in sessions:
        job = by_request.get(LINK_JOB[s["link"]])
        if job is None or s["charted"] is None or not job.started or not job.finished:
            continue
        rows.append(dict(submit=job.created - s["started"], wait=job.started - job.created,
                         compute=job.finished - job.started, draw=s["charted"] - job.finished))
    return {k: round(statistics.median(r[k] for r in rows), 1) for k in ("submit", "wait", "compute", "draw")} \
        if rows else {}
