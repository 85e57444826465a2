"""Dashboard speed: cached page renders and server cold start, against trivial-app anchors, medians.

    python benchmarks/bench_dashboard.py                      # both parts, markdown tables on stdout
    python benchmarks/bench_dashboard.py --repeats 15 --server-repeats 3 --skip-server

Every run uses fresh temporary VITLENS_CACHE_DIR and VITLENS_CHECKPOINT_ROOT folders (so the user's
cache is never read or written and the checkpoint picker lists nothing).

(a) Cached view render. Each page is first opened once under `streamlit.testing.v1.AppTest` with the
query string `samples=64&batch_size=16` (demo_resnet on digits) and re-run until its plotly chart
appears, i.e. the background job has filled the disk cache (for app.py also until the "demo models at a
glance" jobs are done). Then each repetition times `AppTest.from_file(path)` + query parameters +
`.run()` for every page and for the anchor, a one-line Streamlit script in a temporary file, in a
rotating order; a timed run that does not draw its chart at once (cache miss) is an error. Reported:
median wall seconds per page (target < 1 s), median CPU seconds of this process, and the median of the
per-repetition ratios page / anchor. The first AppTest run of the process (imports) is not timed.

(b) Server cold start. `python -m streamlit run APP --server.headless true --server.port P
--browser.gatherUsageStats false` in a new process; wall time until GET /_stcore/health answers "ok"
and until the first successful GET / (the page HTML). Interleaved with the same for the one-line anchor
app; medians of --server-repeats (target < 10 s). Note that Streamlit runs a page script only when a
browser session connects, so these times do not include importing torch/vitlens; the last row
("first render in a fresh process") adds that: a new Python process that imports Streamlit and runs
app.py once under AppTest with the cache already filled, against the same for the anchor script.

Exit status 1 when a measurement with a target misses it.
"""
from __future__ import annotations

import argparse
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PAGES = ["pages/4_Feature_variance.py", "pages/3_Fourier.py", "app.py"]
QUERY = {"samples": "64", "batch_size": "16"}
ANCHOR_SOURCE = 'import streamlit as st; st.write("hello")\n'
RENDER_TARGET = 1.0
SERVER_TARGET = 10.0


# ----------------------------------------------------------------------------- (a) cached renders


def open_app(path: str, query: dict | None, timeout: float = 60):
    from streamlit.testing.v1 import AppTest
    at = AppTest.from_file(path, default_timeout=timeout)
    for key, value in (query or {}).items():
        at.query_params[key] = value
    return at


def prefill(page: str, query: dict, timeout: float = 600) -> float:
    """Open PAGE and re-run it until it draws its chart and no job is left; returns seconds taken."""
    from vitlens.jobs import manager
    start = time.perf_counter()
    at = open_app(str(ROOT / page), query, timeout=120)
    at.run()
    while True:
        if at.exception:
            raise RuntimeError(f"{page}: {[e.value for e in at.exception]}")
        if at.error:
            raise RuntimeError(f"{page}: {[e.value for e in at.error]}")
        idle = not any(job.get("state") in ("queued", "running") for job in _jobs(manager()))
        if at.get("plotly_chart") and idle:
            return time.perf_counter() - start
        if time.perf_counter() - start > timeout:
            raise RuntimeError(f"{page}: no chart after {timeout:.0f}s")
        time.sleep(0.5)
        at.run()


def _jobs(mgr) -> list[dict]:
    jobs = getattr(mgr, "_jobs", {})
    return [j.summary() for j in list(jobs.values())]


def timed_render(path: str, query: dict | None, needs_chart: bool) -> tuple[float, float]:
    c0, w0 = time.process_time(), time.perf_counter()
    at = open_app(path, query)
    at.run()
    wall, cpu = time.perf_counter() - w0, time.process_time() - c0
    if at.exception:
        raise RuntimeError(f"{path}: {[e.value for e in at.exception]}")
    if needs_chart and not at.get("plotly_chart"):
        raise RuntimeError(f"{path}: no chart on a cached run (cache miss?)")
    return wall, cpu


def bench_renders(anchor_path: str, repeats: int) -> tuple[list[dict], dict]:
    prefill_s = {page: prefill(page, QUERY) for page in PAGES}
    print(f"# prefill (s): { {p: round(s, 1) for p, s in prefill_s.items()} }", file=sys.stderr, flush=True)
    items = [("anchor", anchor_path, None, False)] + [(p, str(ROOT / p), QUERY, True) for p in PAGES]
    for _, path, query, chart in items:  # warm-up: one untimed cached run each
        timed_render(path, query, chart)
    times = {name: [] for name, *_ in items}
    for rep in range(repeats):
        k = rep % len(items)
        for name, path, query, chart in items[k:] + items[:k]:
            times[name].append(timed_render(path, query, chart))
    anchor = times["anchor"]
    rows = []
    for name, *_ in items:
        t = times[name]
        rows.append(dict(name=name, wall=statistics.median(w for w, _ in t), cpu=statistics.median(c for _, c in t),
                         ratio=statistics.median(w / a for (w, _), (a, _) in zip(t, anchor)),
                         cpu_ratio=statistics.median(c / a for (_, c), (_, a) in zip(t, anchor)),
                         max=max(w for w, _ in t)))
    return rows, prefill_s


# ----------------------------------------------------------------------------- (b) server start


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str) -> tuple[int, bytes] | None:
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            return r.status, r.read()
    except OSError:
        return None


def server_start(app: str, cwd: str, env: dict, log: Path, timeout: float = 120) -> tuple[float, float]:
    """(seconds to /_stcore/health == ok, seconds to the first 200 GET / with HTML)."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    cmd = [sys.executable, "-m", "streamlit", "run", app, "--server.headless", "true", "--server.port", str(port),
           "--browser.gatherUsageStats", "false"]
    with open(log, "ab") as out:
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT)
        try:
            health = page = None
            while page is None:
                now = time.perf_counter() - start
                if now > timeout:
                    raise RuntimeError(f"{app}: server not up after {timeout:.0f}s (see {log})")
                if proc.poll() is not None:
                    raise RuntimeError(f"{app}: server exited with {proc.returncode} (see {log})")
                if health is None:
                    got = _get(f"{url}/_stcore/health")
                    if got and got[0] == 200 and got[1].strip() == b"ok":
                        health = time.perf_counter() - start
                else:
                    got = _get(f"{url}/")
                    if got and got[0] == 200 and b"<html" in got[1].lower():
                        page = time.perf_counter() - start
                        break
                time.sleep(0.02)
            return health, page
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


FRESH_RENDER = """
import sys, time
t0 = time.perf_counter()
from streamlit.testing.v1 import AppTest
at = AppTest.from_file(sys.argv[1], default_timeout=120)
for kv in sys.argv[3:]:
    k, v = kv.split("=", 1)
    at.query_params[k] = v
at.run()
assert not at.exception, [e.value for e in at.exception]
if sys.argv[2] == "chart":
    assert at.get("plotly_chart"), "no chart: cache miss"
"""


def fresh_render(path: str, env: dict, chart: bool, query: dict | None) -> float:
    args = [sys.executable, "-c", FRESH_RENDER, path, "chart" if chart else "-"]
    args += [f"{k}={v}" for k, v in (query or {}).items()]
    start = time.perf_counter()
    done = subprocess.run(args, cwd=str(ROOT), env=env, capture_output=True, text=True, timeout=300)
    took = time.perf_counter() - start
    if done.returncode:
        raise RuntimeError(f"fresh render of {path} failed: {done.stderr[-1500:]}")
    return took


def bench_server(anchor_path: str, repeats: int, env: dict, log: Path, fresh: bool) -> list[dict]:
    times = {"anchor": [], "app": [], "anchor_fresh": [], "app_fresh": []}
    for rep in range(repeats):
        order = [("anchor", anchor_path, str(Path(anchor_path).parent)), ("app", "app.py", str(ROOT))]
        for name, app, cwd in (order if rep % 2 == 0 else order[::-1]):
            times[name].append(server_start(app, cwd, env, log))
        if fresh:
            fr = [("anchor_fresh", anchor_path, False, None), ("app_fresh", str(ROOT / "app.py"), True, QUERY)]
            for name, path, chart, query in (fr if rep % 2 == 0 else fr[::-1]):
                times[name].append(fresh_render(path, env, chart, query))
        print(f"# server rep {rep}: { {k: v[-1] for k, v in times.items() if v} }", file=sys.stderr, flush=True)
    rows = []
    for k, label in enumerate(("/_stcore/health == ok", "first GET / (HTML)")):
        a = [t[k] for t in times["anchor"]]
        v = [t[k] for t in times["app"]]
        rows.append(dict(name=f"server start to {label}", anchor=statistics.median(a), app=statistics.median(v),
                         ratio=statistics.median(y / x for x, y in zip(a, v)), target=f"< {SERVER_TARGET:g} s",
                         ok=statistics.median(v) < SERVER_TARGET))
    if fresh:
        a, v = times["anchor_fresh"], times["app_fresh"]
        rows.append(dict(name="first render in a fresh process (AppTest, cached)", anchor=statistics.median(a),
                         app=statistics.median(v), ratio=statistics.median(y / x for x, y in zip(a, v)),
                         target="(info)", ok=None))
    return rows


# ----------------------------------------------------------------------------- main


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=15, help="timed cached renders per page (default 15)")
    p.add_argument("--server-repeats", type=int, default=3, help="server cold starts per app (default 3)")
    p.add_argument("--skip-renders", action="store_true")
    p.add_argument("--skip-server", action="store_true")
    p.add_argument("--no-fresh-render", action="store_true", help="skip the fresh-process first-render row")
    p.add_argument("--keep", action="store_true", help="keep the temporary folders (cache, server log)")
    args = p.parse_args(argv)

    tmp = Path(tempfile.mkdtemp(prefix="vitlens-bench-dashboard-"))
    for var, sub in (("VITLENS_CACHE_DIR", "cache"), ("VITLENS_CHECKPOINT_ROOT", "checkpoints")):
        (tmp / sub).mkdir(mode=0o700)
        os.environ[var] = str(tmp / sub)
    anchor = tmp / "anchor" / "trivial_app.py"
    anchor.parent.mkdir()
    anchor.write_text(ANCHOR_SOURCE)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    sys.path.insert(0, str(ROOT))
    status = 0
    print(f"temporary folders under {tmp} (removed at the end unless --keep); python {sys.version.split()[0]}\n")

    if not args.skip_renders:
        import logging

        import streamlit
        # AppTest runs outside a server: Streamlit warns "missing ScriptRunContext" on every run
        for name in ("streamlit.runtime.scriptrunner_utils.script_run_context", "streamlit"):
            logging.getLogger(name).setLevel(logging.ERROR)
        rows, prefill_s = bench_renders(str(anchor), args.repeats)
        print(f"### (a) cached view render: AppTest.from_file(...).run(), streamlit {streamlit.__version__}, "
              f"query {QUERY}, {args.repeats} interleaved repeats, medians\n")
        print("| page | wall median (s) | max wall (s) | CPU median (s, this process) | ratio to anchor (wall) "
              "| ratio to anchor (CPU) | target | ok |")
        print("|---|---:|---:|---:|---:|---:|---|---|")
        for r in rows:
            name = "anchor: one-line script" if r["name"] == "anchor" else r["name"]
            target, ok = ("", "") if r["name"] == "anchor" else (f"< {RENDER_TARGET:g} s",
                                                                  "yes" if r["wall"] < RENDER_TARGET else "NO")
            status |= ok == "NO"
            print(f"| {name} | {r['wall']:.3f} | {r['max']:.3f} | {r['cpu']:.3f} | {r['ratio']:.2f} | "
                  f"{r['cpu_ratio']:.2f} | {target} | {ok} |")
        print(f"\nprefill (first open, computing the result; not part of the target): "
              + ", ".join(f"{p} {s:.1f} s" for p, s in prefill_s.items()) + "\n")

    if not args.skip_server:
        rows = bench_server(str(anchor), args.server_repeats, env, tmp / "server.log", not args.no_fresh_render)
        print(f"### (b) server cold start: `python -m streamlit run APP --server.headless true --server.port P "
              f"--browser.gatherUsageStats false`, {args.server_repeats} interleaved repeats, wall-time medians\n")
        print("| measurement | anchor: one-line app (s) | app.py (s) | ratio | target | ok |")
        print("|---|---:|---:|---:|---|---|")
        for r in rows:
            ok = "" if r["ok"] is None else ("yes" if r["ok"] else "NO")
            status |= ok == "NO"
            print(f"| {r['name']} | {r['anchor']:.2f} | {r['app']:.2f} | {r['ratio']:.2f} | {r['target']} | {ok} |")
        print()
    if not args.keep:
        shutil.rmtree(tmp, ignore_errors=True)
    return int(bool(status))


if __name__ == "__main__":
    sys.exit(main())
