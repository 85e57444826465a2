"""A newcomer's first start in a real browser (Debian's Chromium through Playwright): a fresh server,
an empty user cache, the demo defaults.

    python benchmarks/bench_first_start.py --reps 3                      # vitlens dashboard (workers first)
    python benchmarks/bench_first_start.py --reps 1 --launcher streamlit # streamlit run app.py

(a) As installed (the shipped Results on): from the server's health answer, every page is opened in
a fresh browser context, one after the other, and timed from `goto` to its first chart (Findings: its
verdict table); then the first non-demo quick view, Fourier of timm:resnet18 (10 classes) on digits,
which waits for Run (pressed as soon as it shows) and needs a job (model build and compute).
(b) A user off the shipped settings (VITLENS_DEMO_RESULTS=off: everything computes): the landing page
is opened (its scoreboard starts in the background), then Hessian and Loss landscape with the demo
defaults; each is timed to its chart and set against its job's own compute (the run record's seconds):
the rest is queueing and polling. Medians over --reps fresh servers.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))
from load_scenario import BROWSER_FLAGS, CHART, CHROMIUM, start_server  # noqa: E402

TABLE = '[data-testid="stDataFrame"]'
ANCHOR_APP = ("import plotly.graph_objects as go\nimport streamlit as st\n"
              "st.title('anchor')\nst.plotly_chart(go.Figure(go.Scatter(x=[0, 1, 2], y=[1, 3, 2])))\n")
NON_DEMO = ("Fourier?model=timm%3Aresnet18&model_args=%7B%22num_classes%22%3A+10%7D&dataset=digits&split=test"
            "&batch_size=64&seed=0&device=auto&samples=256&convention=paper&resolution=0")


def page_links() -> list[tuple[str, str]]:
    from vitlens.analyses import pages
    return [("landing", ""), *((a.page.slug, a.page.slug) for a in pages()), ("Compare", "Compare")]


async def time_to_chart(browser, url: str, link: str, selector: str, timeout_s: float = 300,
                        press_run: bool = False) -> float:
    """Seconds from `goto` to the first SELECTOR (PRESS_RUN: a view that waits for Run, pressed as soon
    as it shows: not a demo model)."""
    context = await browser.new_context(viewport={"width": 1300, "height": 900})
    page = await context.new_page()
    start = time.perf_counter()
    await page.goto(f"{url}/{link}", timeout=timeout_s * 1000)
    if press_run:
        await page.get_by_role("button", name="Run", exact=True).click(timeout=timeout_s * 1000)
    await page.locator(selector).first.wait_for(timeout=timeout_s * 1000)
    seconds = time.perf_counter() - start
    await context.close()
    return seconds


async def shipped_on(url: str) -> dict:
    from playwright.async_api import async_playwright
    out = {}
    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=CHROMIUM, headless=True, args=BROWSER_FLAGS)
        for name, link in page_links():
            out[name] = await time_to_chart(browser, url, link, TABLE if name == "Findings" else CHART)
        out["non-demo Fourier (timm:resnet18)"] = await time_to_chart(browser, url, NON_DEMO, CHART, press_run=True)
        await browser.close()
    return out


async def shipped_off(url: str, jobs) -> dict:
    from playwright.async_api import async_playwright
    out = {}
    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=CHROMIUM, headless=True, args=BROWSER_FLAGS)
        context = await browser.new_context(viewport={"width": 1300, "height": 900})
        landing = await context.new_page()
        await landing.goto(url, timeout=300000)
        await landing.locator(CHART).first.wait_for(timeout=300000)  # its evaluate job; the scoreboard is queued
        for slug, analysis in (("Hessian", "hessian"), ("Loss_landscape", "landscape")):
            seconds = await time_to_chart(browser, url, slug, CHART)
            job = next(j for j in jobs.jobs() if j.spec.analysis == analysis)
            out[slug] = (seconds, job.finished - job.started)
        board = next((j for j in jobs.jobs() if j.spec.analysis == "findings"), None)
        out["scoreboard"] = (board.state, board.runs) if board else ("not queued", 0)
        await context.close()
        await browser.close()
    return out


def anchor() -> float:
    """Goto to chart for a one-chart Streamlit app on its own fresh server: the floor of any page here."""
    home = Path(tempfile.mkdtemp())
    (home / "anchor.py").write_text(ANCHOR_APP)
    proc, url = start_server(home, script=str(home / "anchor.py"), launcher="streamlit")

    async def go() -> float:
        from playwright.async_api import async_playwright
        async with async_playwright() as p:
            browser = await p.chromium.launch(executable_path=CHROMIUM, headless=True, args=BROWSER_FLAGS)
            seconds = await time_to_chart(browser, url, "", CHART)
            await browser.close()
            return seconds
    try:
        return asyncio.run(go())
    finally:
        proc.terminate()
        proc.wait(30)


def one_server(launcher: str, shipped: bool) -> dict:
    home = Path(tempfile.mkdtemp())
    env = dict(VITLENS_DEMO_RESULTS=os.environ.get("VITLENS_DEMO_RESULTS", "") if shipped else "off")
    os.environ["VITLENS_CACHE_DIR"] = str(home / "cache")  # this process reads the server's queue
    from vitlens.jobs import JobManager
    start = time.perf_counter()
    proc, url = start_server(home, launcher=launcher, **env)
    health = time.perf_counter() - start
    try:
        out = asyncio.run(shipped_on(url) if shipped else shipped_off(url, JobManager(embedded_workers=0)))
    finally:
        proc.terminate()
        proc.wait(30)
    return dict(out, health=health)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=1)
    parser.add_argument("--launcher", choices=["dashboard", "streamlit"], default="dashboard")
    parser.add_argument("--skip-off", action="store_true", help="only part (a)")
    args = parser.parse_args()
    runs = [dict(one_server(args.launcher, True), anchor=anchor()) for _ in range(args.reps)]
    print(f"(a) {args.launcher}, shipped Results on; medians of {args.reps} fresh servers\n")
    print("| view | seconds from goto to first chart |\n|---|---|")
    for key in runs[0]:
        label = {"health": "server start to health", "anchor": "anchor: a one-chart Streamlit app"}.get(key, key)
        print(f"| {label} | "
              f"{statistics.median(r[key] for r in runs):.2f} |")
    if args.skip_off:
        return
    runs = [one_server(args.launcher, False) for _ in range(args.reps)]
    print(f"\n(b) {args.launcher}, VITLENS_DEMO_RESULTS=off (everything computes), after the landing page\n")
    print("| view | to chart (s) | its job's compute (s) | the rest (s) |\n|---|---|---|---|")
    for key in ("Hessian", "Loss_landscape"):
        chart, compute = (statistics.median(r[key][i] for r in runs) for i in (0, 1))
        print(f"| {key} | {chart:.1f} | {compute:.1f} | {chart - compute:.1f} |")
    print("\nscoreboard (state, runs) per server: " + json.dumps([r["scoreboard"] for r in runs]))


if __name__ == "__main__":
    main()
