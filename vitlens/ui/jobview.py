"""Views of a request: its Result from the cache at once, else its background job with progress
(submit, join, cancel); the page header; the standard analysis page (options, then the figures its
declaration names)."""
from __future__ import annotations

import time
from typing import Callable

import streamlit as st

from ..declarations import get_analysis
from ..engine import cached_result
from ..store.keys import request_id
from ..errors import VitlensError
from ..figures import figures
from ..jobs import CANCELLED, DONE, FAILED, QUEUED, Job, manager
from ..request import JobSpec
from ..result import Result
from .identity import require_sign_in, session_id
from .sidebar import options, sidebar, spec_label
from .state import plain


def request_of(spec: JobSpec) -> str:
    """SPEC's `request_id`, computed once per run of the page (it stats every weight file and walks a
    `folder:` data set); `sidebar()` starts each run with an empty memo."""
    memo = st.session_state.setdefault("vl__requests", {})
    key = spec.to_json()
    if key not in memo:
        memo[key] = request_id(spec)
    return memo[key]


def autorun_default(spec: JobSpec) -> bool:
    """Start cheap jobs (the demo models) as soon as a page opens; others wait for Run."""
    return spec.model.startswith("demo_") and (spec.samples or 0) <= 2048


def _refused(spec: JobSpec, error: VitlensError) -> Job:
    """A job-shaped answer for a request the limits refused (shown like a failed job; never queued)."""
    return Job(id="", request="", spec=spec, state=FAILED, error=str(error).splitlines()[0])


def submit(spec: JobSpec, background: bool = False) -> Job:
    """Queue SPEC for this session (or join its running job); over a limit: a failed, unqueued job.
    BACKGROUND: nobody asked for it yet (lowest priority, yields to users' jobs; `JobManager.submit`)."""
    try:
        return manager().submit(spec, session=session_id(), request=request_of(spec), background=background)
    except VitlensError as err:
        return _refused(spec, err)


def result_or_job(spec: JobSpec, autorun: bool | None = None, background: bool = False):
    """(Result, None) when SPEC was computed before (or shipped, `vitlens.shipped`), else (None, its
    latest job or None).

    A job is submitted here when AUTORUN (default: cheap demo models, see `autorun_default`) and
    none exists, or when a finished job's Result has since been evicted from the cache; as a
    BACKGROUND job when the page starts it unasked. A request over the server's limits comes back as
    a failed job with the one-line reason (nothing queued)."""
    request = request_of(spec)
    try:
        result = cached_result(spec, request=request)
    except VitlensError as err:  # the cache folder cannot be used (full disk, read-only): one line, no box
        return None, _refused(spec, err)
    if result is not None:
        return result, None
    job = manager().find(spec, request)
    autorun = autorun_default(spec) if autorun is None else autorun
    if (job is None and autorun) or (job is not None and job.state == DONE):
        job = submit(spec, background=background)
    return None, job


def show(spec: JobSpec | None, draw: Callable[[Result], None], autorun: bool | None = None) -> Result | None:
    """Show SPEC's Result: from the cache at once, else as a background job with progress."""
    if spec is None:
        return None
    result, job = result_or_job(spec, autorun)
    if result is not None:
        draw(result)
        shipped = f" · precomputed, shipped with vitlens {result.meta['shipped']}" if result.meta.get("shipped") else ""
        st.caption(plain(convention_caption(result) + shipped))
        return result
    if job is None or job.state == CANCELLED:
        if st.button("Run", type="primary", key=f"run_{spec.analysis}"):
            job = submit(spec)
            if job.state != FAILED:
                st.rerun()
            st.error(plain(job.error))
            return None
        st.info("Not computed yet: press Run (it runs in the background; you can switch pages).")
        return None
    if job.state == FAILED:
        st.error(plain(job.error or "the job failed"))
        if st.button("Try again", key=f"retry_{spec.analysis}"):
            submit(spec)
            st.rerun()
        return None
    _progress(job.id)
    return None


POLL_S = 1.0  # one fragment rerun a second per job view (each costs Streamlit a script run and a message)
WATCH_S = 0.1  # inside it, the job's record is read this often (the thread sleeps in between)


@st.fragment(run_every=POLL_S)
def _progress(job_id: str) -> None:
    """The job's progress bar and Cancel, redrawn once a second; the job's end is noticed within
    WATCH_S: the fragment watches the record (three reads of the store, ~0.2 ms) until just before
    its next run, and asks for the page's rerun the moment the job ends. Twice the reruns a second
    (0.5 s) noticed the end 0.25 s later on average and cost every other session's views more."""
    jobs = manager()
    job = jobs.get(job_id)
    end = time.monotonic() + POLL_S - 2 * WATCH_S
    while job is not None and job.active and time.monotonic() < end:
        time.sleep(WATCH_S)
        job = jobs.get(job_id)
    if job is None:
        return
    if not job.active:
        st.rerun(scope="app")
    eta = job.eta()
    left = f", about {eta:.0f}s left" if eta is not None else ""
    text = f"{job.spec.analysis} on {job.spec.model}: {job.state} {job.fraction:.0%}{left} {job.message}"
    st.progress(min(max(job.fraction, 0.0), 1.0), text=plain(text))
    if job.state == QUEUED and not jobs.workers():
        st.caption("No worker has checked in yet: it is starting, or start one with `vitlens worker`.")
    if st.button("Cancel", key=f"cancel_{job_id}"):
        jobs.cancel(job_id, session=session_id())  # withdraws this user's request; others' keep it running


def convention_caption(result: Result) -> str:
    """Which convention made RESULT (every Result records it)."""
    conv = result.meta.get("convention") or {}
    name = conv.get("name", "vitlens")
    what = {"paper": "the authors' code (github xxxnell/how-do-vits-work)", "standard": "the standard variant"}
    notes = f" · {conv['notes']}" if conv.get("notes") else ""
    return f"Convention: {name} — {what.get(name, 'vitlens')}{notes}"


def download(result: Result, name: str) -> None:
    """CSV download of a Result's tidy frame."""
    st.download_button("Download CSV", result.frame.to_csv(index=False).encode(), file_name=f"{name}.csv",
                       mime="text/csv", key=f"dl_{name}")


def page(title: str, caption: str) -> None:
    """Common page header (and the sign-in gate, when configured). The title names the page's own
    state (see `value`)."""
    st.set_page_config(page_title=f"vitlens · {title}", layout="wide")
    require_sign_in()
    try:  # the job queue and its settings (VITLENS_QUEUE, VITLENS_*WORKERS, VITLENS_MAX_*): one line if wrong
        manager()
    except VitlensError as err:
        st.error(plain(f"This server's job queue is misconfigured: {str(err).splitlines()[0]}"))
        st.stop()
    st.session_state["vl__title"] = title
    st.title(title)
    st.caption(caption)


def draw_figures(result: Result) -> None:
    """RESULT's declared figures, side by side when there are two."""
    drawn = figures(result)
    slots = st.columns(2) if len(drawn) == 2 else [st.container() for _ in drawn]
    for slot, fig in zip(slots, drawn):
        slot.plotly_chart(fig, width="stretch")


def summary_caption(result: Result) -> None:
    """The Result's scalar summary numbers in one line."""
    summary = result.meta.get("summary", {})
    shown = {k: v for k, v in summary.items()
             if not k.startswith("_") and isinstance(v, (int, float)) and not isinstance(v, bool)}
    if shown:
        st.caption(" · ".join(f"{k}: {v:.4g}" if isinstance(v, float) else f"{k}: {v}" for k, v in shown.items()))


def analysis_header(name: str) -> None:
    """The page header of analysis NAME: its declared title and caption."""
    declared_page = get_analysis(name).page
    page(declared_page.title, declared_page.caption)


def analysis_page(name: str) -> JobSpec | None:
    """The standard page of analysis NAME: header, sidebar, its options, then its figures, summary
    and a CSV download, all from its declaration."""
    analysis_header(name)
    spec = sidebar(name)
    options(spec)
    if spec is not None:
        st.caption(plain(spec_label(spec)))

    def draw(result: Result) -> None:
        draw_figures(result)
        summary_caption(result)
        download(result, name)

    show(spec, draw)
    return spec
