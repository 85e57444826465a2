"""Streamlit pieces every dashboard page shares: the sidebar, URL state, jobs and result views.

State lives in three places, kept in step on every run:
  * the URL (`st.query_params`): every choice and every analysis parameter, so a copied link opens
    the same view for a teammate, also on a freshly started server;
  * `st.session_state`: survives page switches (Streamlit forgets widget state of widgets a page
    does not draw, and drops the query string on navigation); shared selections under
    "vl_<name>", a page's own values under "vl_<scope>.<name>" (scope: the page's analysis);
  * the widget itself (key `w_<name>` / `w_<scope>.<name>`), whose change callback writes the
    session value.
Pages hold no torch code: they call `page()`, `sidebar(analysis)`, `options(spec, names)` (widgets
from the analysis' option declarations), `control()` for view-only settings, then `show(spec, draw)`.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import time
import uuid
from pathlib import Path
from typing import Any, Callable

import streamlit as st
from streamlit.runtime.scriptrunner import get_script_run_ctx

from .analyses import get_analysis, list_analyses
from .cache import parse_size
from .data import DATASET_NAMES
from .engine import JobSpec, cached_result
from .errors import VitlensError
from .jobs import CANCELLED, DONE, FAILED, QUEUED, Job, manager
from .models import list_models
from .models.checkpoints import SUFFIXES as CHECKPOINT_SUFFIXES, read_state_dict
from .models.registry import check_model_args
from .options import Option
from .paths import checkpoint_root, data_root, list_checkpoints, resolve_inside
from .result import Result

DATASETS = [*DATASET_NAMES, "folder"]
DEVICES = ["auto", "cpu", "cuda"]
TIMM_CHOICE = "timm: (any timm model)"


def _registry_names() -> list[str]:
    return [e.name for e in list_models()]


# ----------------------------------------------------------------------------- URL-backed values
#
# All state is per browser session (st.session_state), never module-level: the server runs every
# session's script in its own thread. Shared selections (model, data, device, seed, ...) are stored
# under "vl_<name>"; a page's own values (its analysis' options, its view controls) under
# "vl_<page>.<name>", so weight_decay set on one page never reaches another page's request.

PAGE_KEY = "vl__page"          # the page this session ran last
TRUSTED_KEY = "vl__url_page"   # the page the URL's own values belong to (a deep link's page)
NAMES_KEY = "vl__names"        # the page values drawn in this run (they go to the URL)


def _scope() -> str:
    return st.session_state.get(PAGE_KEY, "")


def _store(name: str, scoped: bool) -> str:
    return f"vl_{_scope()}.{name}" if scoped else f"vl_{name}"


def _cast(value: Any, default: Any) -> Any:
    if isinstance(default, bool):
        return str(value).lower() in ("1", "true", "yes", "on")
    if isinstance(default, int):
        return int(float(value))
    if isinstance(default, float):
        return float(value)
    return str(value)


def value(name: str, default: Any, scoped: bool = False, parse: Callable[[Any], Any] | None = None) -> Any:
    """The current value of NAME: session, else URL (a page's own values only when the URL was
    made on this page), else DEFAULT."""
    store = _store(name, scoped)
    if store not in st.session_state:
        raw = st.query_params.get(name)
        if scoped and st.session_state.get(TRUSTED_KEY) != _scope():
            raw = None  # left over from another page: not this page's value
        try:
            st.session_state[store] = default if raw is None else (parse or (lambda v: _cast(v, default)))(raw)
        except (TypeError, ValueError, OverflowError, VitlensError):
            st.session_state[store] = default
    return st.session_state[store]


def _set(store: str, key: str) -> None:
    st.session_state[store] = st.session_state[key]


def widget(name: str, default: Any, render: Callable, label: str, scoped: bool = False,
           parse: Callable[[Any], Any] | None = None, **kwargs) -> Any:
    """Draw a widget whose value is stored under NAME (session + URL)."""
    current = value(name, default, scoped, parse)
    store = _store(name, scoped)
    key = f"w_{_scope()}.{name}" if scoped else f"w_{name}"
    if "options" in kwargs and current not in kwargs["options"]:
        current = default if default in kwargs["options"] else kwargs["options"][0]
        st.session_state[store] = current
    low, high = kwargs.get("min_value"), kwargs.get("max_value")
    if isinstance(current, (int, float)) and not isinstance(current, bool) and (
            current != current or (low is not None and current < low) or (high is not None and current > high)):
        current = default  # a link's out-of-range number (samples=1e9, seed=-5): the default, not a crash
        st.session_state[store] = current
    if key not in st.session_state or st.session_state[key] != current:
        st.session_state[key] = current
    render(label, key=key, on_change=_set, args=(store, key), **kwargs)
    if scoped:
        st.session_state.setdefault(NAMES_KEY, [])
        if name not in st.session_state[NAMES_KEY]:
            st.session_state[NAMES_KEY].append(name)
    return st.session_state[store]


def _sync_url(clean: bool = True) -> None:
    """The URL holds the shared selection and this page's values, and (CLEAN, once the page's own
    values are drawn) nothing of other pages."""
    want = {n: str(st.session_state[f"vl_{n}"]) for n in SPEC_FIELDS if f"vl_{n}" in st.session_state}
    for n in st.session_state.get(NAMES_KEY, []):
        v = st.session_state.get(_store(n, True))
        want[n] = "none" if v is None else str(v).lower() if isinstance(v, bool) else str(v)
    stale = [k for k in st.query_params if k not in want and k in _page_value_names()] if clean else []
    for k in stale:
        del st.query_params[k]
    if {k: st.query_params.get(k) for k in want} != want:
        st.query_params.update(want)
    if clean:
        st.session_state[TRUSTED_KEY] = _scope()  # from now on the URL speaks for this page


def _page_value_names() -> set[str]:
    names = {o.name for a in list_analyses() for o in a.options}
    return names | set(PAGE_CONTROLS)


PAGE_CONTROLS = ("plot", "value", "log_scale", "compare", "view")  # view controls pages draw themselves


def control(name: str, default: Any, render: Callable | None = None, label: str | None = None, **kwargs) -> Any:
    """A page's own view control (not an analysis option), drawn in the sidebar and kept in the URL."""
    if render is None:
        render = st.sidebar.checkbox if isinstance(default, bool) else st.sidebar.text_input
    out = widget(name, default, render, label or name.replace("_", " "), scoped=True, **kwargs)
    _sync_url()
    return out


def options(spec: JobSpec | None, names: list[str] | None = None, labels: dict | None = None,
            **widget_args) -> dict:
    """Draw the widgets of SPEC's analysis options (NAMES, default the analysis' `page_options`; in that order) from their
    declarations, and set spec.params to the values drawn. An option whose `applies` rule does not
    hold for the values above it is not drawn and stays at its default. WIDGET_ARGS maps an option
    name to extra widget arguments (step, format)."""
    analysis = get_analysis(_scope_analysis())
    chosen = [analysis.option(n) for n in (analysis.shown if names is None else names)]
    labels = labels or {}
    values = dict(analysis.defaults)
    shown = {}
    for opt in chosen:
        if opt.applies and not opt.applies_to(values):
            continue
        values[opt.name] = shown[opt.name] = _option_widget(opt, labels.get(opt.name), widget_args.get(opt.name, {}))
    _sync_url()
    if spec is not None:
        spec.params = shown
    return shown


def _option_widget(opt: Option, label: str | None, extra: dict) -> Any:
    sb = st.sidebar
    label = label or opt.name.replace("_", " ")
    common = dict(scoped=True, parse=opt.parse, help=f"{opt.help} ({opt.describe()})")
    if opt.choices:
        choices = ([None] if opt.nullable else []) + list(opt.choices)
        return widget(opt.name, opt.default, sb.selectbox, label, options=choices,
                      format_func=lambda v: "none" if v is None else str(v), **common, **extra)
    if opt.type is bool:
        return widget(opt.name, opt.default, sb.checkbox, label, **common, **extra)
    if opt.type in (int, float) and not opt.nullable:
        cast = opt.type
        bounds = {k: cast(v) for k, v in (("min_value", opt.low), ("max_value", opt.high)) if v is not None}
        if opt.type is float:
            bounds.setdefault("format", "%.4g")
        return widget(opt.name, opt.default, sb.number_input, label, **bounds, **common, **extra)
    text = widget(opt.name, opt.show(opt.default) if opt.default is not None else "", sb.text_input, label,
                  scoped=True, parse=str, help=common["help"], **extra)
    try:
        return opt.parse(text)
    except VitlensError as err:
        sb.error(str(err))
        return opt.default


def _scope_analysis() -> str:
    return st.session_state.get("vl__analysis", "")


# ----------------------------------------------------------------------------- sidebar

SPEC_FIELDS = ["model", "model_args", "checkpoint", "dataset", "folder", "split", "samples", "seed",
               "batch_size", "device"]


UPLOADS = "uploads"
UPLOAD_QUOTA = os.environ.get("VITLENS_UPLOAD_QUOTA", "2G")    # per session
UPLOAD_DAYS = float(os.environ.get("VITLENS_UPLOAD_DAYS", "7"))  # older uploads are deleted


def upload_folder() -> str:
    """This session's upload folder, relative to the checkpoint root: uploads are private to it."""
    return f"{UPLOADS}/{hashlib.sha256(session_id().encode()).hexdigest()[:16]}"


def _expire_uploads(root: Path) -> None:
    cutoff = time.time() - UPLOAD_DAYS * 86400
    for path in (root / UPLOADS).glob("*/*"):
        if path.is_file() and path.stat().st_mtime < cutoff:
            path.unlink(missing_ok=True)


def _save_upload(upload) -> str:
    """Store an uploaded checkpoint in this session's upload folder (name from its hash); returns
    the path relative to the checkpoint root. It must read as weights (as data only: weights_only /
    safetensors) or it is deleted again; a per-session quota applies and old uploads expire."""
    data = upload.getvalue()
    suffix = next((s for s in CHECKPOINT_SUFFIXES if upload.name.endswith(s)), None)
    if suffix is None:
        raise VitlensError(f"upload '{upload.name}' must be one of {', '.join(CHECKPOINT_SUFFIXES)}")
    root = checkpoint_root()
    _expire_uploads(root)
    folder = root / upload_folder()
    try:
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    except OSError as err:  # e.g. the checkpoint folder is mounted read-only
        raise VitlensError(f"uploads are off on this server: cannot write {root} ({err.strerror})") from None
    used = sum(p.stat().st_size for p in folder.iterdir() if p.is_file())
    if used + len(data) > parse_size(UPLOAD_QUOTA):
        raise VitlensError(f"upload quota of this session ({UPLOAD_QUOTA}, VITLENS_UPLOAD_QUOTA) is used up")
    path = folder / f"{hashlib.sha256(data).hexdigest()[:16]}{suffix}"
    path.write_bytes(data)
    try:
        read_state_dict(path)
    except VitlensError:
        path.unlink(missing_ok=True)  # refused files do not stay
        raise
    return str(path.relative_to(root))


def sidebar(analysis: str = "") -> JobSpec | None:
    """Draw the shared selection and return the JobSpec it describes (None if it is invalid).
    ANALYSIS is the one this page's `options()` draws (empty for pages that only compare)."""
    st.session_state["vl__analysis"] = analysis
    st.session_state[NAMES_KEY] = []
    scope = analysis or st.session_state.get("vl__title", "")
    if PAGE_KEY not in st.session_state:
        st.session_state[TRUSTED_KEY] = scope  # the session opened here: the URL is a link to this page
    st.session_state[PAGE_KEY] = scope
    sb = st.sidebar
    sb.header("Selection")
    names = _registry_names()
    model = value("model", "demo_resnet")
    # the model spec in the URL decides the first picker state; later the pickers decide the spec
    st.session_state.setdefault("vl_model_choice", model if model in names else TIMM_CHOICE)
    st.session_state.setdefault("vl_timm_name", model[len("timm:"):] if model.startswith("timm:") else "resnet18")
    picked = widget("model_choice", names[0], sb.selectbox, "Model", options=names + [TIMM_CHOICE])
    if picked == TIMM_CHOICE:
        timm_name = widget("timm_name", "resnet18", sb.text_input, "timm model name")
        model = f"timm:{timm_name.strip()}"
    else:
        model = picked
    st.session_state["vl_model"] = model
    model_args = widget("model_args", "", sb.text_input, "Model args (JSON)",
                        placeholder='{"num_classes": 10, "img_size": 32}')
    mine = upload_folder() + "/"  # other sessions' uploads are neither listed nor loadable
    checkpoints = [""] + [c for c in list_checkpoints() if not c.startswith(UPLOADS + "/") or c.startswith(mine)]
    current_ckpt = value("checkpoint", "")
    if current_ckpt and current_ckpt not in checkpoints:
        checkpoints.append(current_ckpt)
    checkpoint = widget("checkpoint", "", sb.selectbox, "Checkpoint (from the checkpoint folder)",
                        options=checkpoints, format_func=lambda s: s or "(none: built-in weights)")
    upload = sb.file_uploader("…or upload weights", type=["safetensors", "pt", "pth", "tar"])
    if upload is not None and st.session_state.get("vl_last_upload") != (upload.name, upload.size):
        try:
            checkpoint = _save_upload(upload)
            st.session_state["vl_checkpoint"] = checkpoint
            st.session_state["vl_last_upload"] = (upload.name, upload.size)
            st.rerun()
        except VitlensError as err:
            sb.error(str(err))
    dataset = widget("dataset", "digits", sb.selectbox, "Data set", options=DATASETS)
    folder = ""
    if dataset == "folder":
        folder = widget("folder", "", sb.text_input, "Folder (inside the data root)",
                        help=f"an ImageFolder tree under {data_root()}")
    split = widget("split", "test", sb.selectbox, "Split", options=["test", "train"])
    samples = widget("samples", 256, sb.number_input, "Samples", min_value=1, max_value=100000, step=64)
    seed = widget("seed", 0, sb.number_input, "Seed", min_value=0, max_value=2**31 - 1)
    batch_size = widget("batch_size", 64, sb.number_input, "Batch size", min_value=1, max_value=4096)
    device = widget("device", "auto", sb.selectbox, "Device", options=DEVICES)
    _sync_url(clean=False)
    sb.header("Analysis")
    try:
        args = check_model_args(json.loads(model_args) if model_args.strip() else {})
        ckpt_path = str(resolve_inside(checkpoint_root(), checkpoint, "checkpoint")) if checkpoint else None
        if ckpt_path and Path(ckpt_path).relative_to(checkpoint_root().resolve()).parts[:1] == (UPLOADS,) \
                and not Path(ckpt_path).is_relative_to((checkpoint_root() / upload_folder()).resolve()):
            raise VitlensError("that checkpoint is another session's upload; upload your own copy")
        data_spec = dataset
        if dataset == "folder":
            data_spec = f"folder:{resolve_inside(data_root(), folder, 'data folder')}"
    except RecursionError:  # JSON nested thousands deep
        st.error("Selection: model args are nested too deeply")
        return None
    except (json.JSONDecodeError, VitlensError) as err:
        st.error(f"Selection: {err}".splitlines()[0])
        return None
    return JobSpec(analysis=analysis, model=model, model_args=args, checkpoint=ckpt_path, dataset=data_spec,
                   split=split, samples=int(samples), seed=int(seed), batch_size=int(batch_size), device=device)


# ----------------------------------------------------------------------------- jobs and views

def autorun_default(spec: JobSpec) -> bool:
    """Start cheap jobs (the demo models) as soon as a page opens; others wait for Run."""
    return spec.model.startswith("demo_") and (spec.samples or 0) <= 2048


XSRF_COOKIE = "_streamlit_xsrf"  # Streamlit's name for Tornado's XSRF cookie (server.enableXsrfProtection)


def xsrf_browser_token(cookie: str | None) -> str | None:
    """The per-browser secret inside Streamlit's XSRF cookie value, or None when there is none.

    The server sets the cookie once per browser and, on every page load, sets it again with the same
    token under a fresh mask. The format is Tornado's, which Streamlit's own server keeps: version 2
    is ``2|mask|masked_token|timestamp`` (hex; the token XOR the 4-byte mask repeated), version 1
    the bare hex token. Every tab of one browser therefore carries the same token, and another
    browser (or a private window) another one."""
    cookie = (cookie or "").strip("\"'")
    if not cookie or len(cookie) > 512:
        return None
    try:
        if cookie.startswith("2|"):
            _, mask_hex, masked_hex, _ = cookie.split("|", 3)
            mask, masked = bytes.fromhex(mask_hex), bytes.fromhex(masked_hex)
            if len(mask) != 4 or not masked:
                return None
            token = bytes(b ^ mask[i % 4] for i, b in enumerate(masked))
        else:
            token = bytes.fromhex(cookie)
    except ValueError:
        return None
    return token.hex() if token else None


def session_id() -> str:
    """Who the job limits (`VITLENS_MAX_JOBS_PER_SESSION`), the queue's round-robin, the Jobs page's
    "mine" and the uploads count for: with sign-in on, the signed-in address (all of one user's tabs
    together); else this browser (a hash of the token in Streamlit's XSRF cookie, `xsrf_browser_token`:
    all its tabs together); else, with XSRF protection off or outside a server run, this session
    (Streamlit's own id, or a uuid kept in the session state).

    Not a security boundary: a client that drops its cookies is a new browser, as a new private
    window is; `VITLENS_MAX_JOBS` still caps the whole server."""
    if allowed_emails() and st.user.get("is_logged_in", False) and st.user.get("email"):
        return f"user:{str(st.user.get('email')).strip().lower()}"
    if "vl_session_id" not in st.session_state:
        token = None
        with contextlib.suppress(Exception):  # no server context (AppTest, bare mode): no cookies
            token = xsrf_browser_token(st.context.cookies.get(XSRF_COOKIE))
        ctx = get_script_run_ctx(suppress_warning=True)
        st.session_state["vl_session_id"] = (
            f"browser:{hashlib.sha256(token.encode()).hexdigest()[:24]}" if token
            else ctx.session_id if ctx is not None else uuid.uuid4().hex)
    return st.session_state["vl_session_id"]


def _refused(spec: JobSpec, error: VitlensError) -> Job:
    """A job-shaped answer for a request the limits refused (shown like a failed job; never queued)."""
    return Job(id="", request="", spec=spec, state=FAILED, error=str(error).splitlines()[0])


def submit(spec: JobSpec) -> Job:
    """Queue SPEC for this session (or join its running job); over a limit: a failed, unqueued job."""
    try:
        return manager().submit(spec, session=session_id())
    except VitlensError as err:
        return _refused(spec, err)


def result_or_job(spec: JobSpec, autorun: bool | None = None):
    """(Result, None) when SPEC was computed before, else (None, its latest job or None).

    A job is submitted here when AUTORUN (default: cheap demo models, see `autorun_default`) and
    none exists, or when a finished job's Result has since been evicted from the cache. A request
    over the server's limits comes back as a failed job with the one-line reason (nothing queued)."""
    result = cached_result(spec)
    if result is not None:
        return result, None
    job = manager().find(spec)
    autorun = autorun_default(spec) if autorun is None else autorun
    if (job is None and autorun) or (job is not None and job.state == DONE):
        job = submit(spec)
    return None, job


def show(spec: JobSpec | None, draw: Callable[[Result], None], autorun: bool | None = None) -> Result | None:
    """Show SPEC's Result: from the cache at once, else as a background job with progress."""
    if spec is None:
        return None
    result, job = result_or_job(spec, autorun)
    if result is not None:
        draw(result)
        st.caption(convention_caption(result))
        return result
    if job is None or job.state == CANCELLED:
        if st.button("Run", type="primary", key=f"run_{spec.analysis}"):
            job = submit(spec)
            if job.state != FAILED:
                st.rerun()
            st.error(job.error)
            return None
        st.info("Not computed yet: press Run (it runs in the background; you can switch pages).")
        return None
    if job.state == FAILED:
        st.error(job.error or "the job failed")
        if st.button("Try again", key=f"retry_{spec.analysis}"):
            submit(spec)
            st.rerun()
        return None
    _progress(job.id)
    return None


@st.fragment(run_every=0.5)
def _progress(job_id: str) -> None:
    jobs = manager()
    job = jobs.get(job_id)
    if job is None:
        return
    if not job.active:
        st.rerun(scope="app")
    eta = job.eta()
    left = f", about {eta:.0f}s left" if eta is not None else ""
    text = f"{job.spec.analysis} on {job.spec.model}: {job.state} {job.fraction:.0%}{left} {job.message}"
    st.progress(min(max(job.fraction, 0.0), 1.0), text=text)
    if job.state == QUEUED and not jobs.workers():
        st.caption("No worker has checked in yet: it is starting, or start one with `vitlens worker`.")
    if st.button("Cancel", key=f"cancel_{job_id}"):
        jobs.cancel(job_id)


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


def allowed_emails() -> set[str]:
    """$VITLENS_ALLOWED_EMAILS: comma-separated addresses or @domain entries; unset/empty = sign-in off."""
    return {e.strip().lower() for e in os.environ.get("VITLENS_ALLOWED_EMAILS", "").split(",") if e.strip()}


def email_allowed(email: str | None, allowed: set[str]) -> bool:
    email = (email or "").strip().lower()
    return bool(email) and (email in allowed or any(a.startswith("@") and email.endswith(a) for a in allowed))


def require_sign_in() -> None:
    """Optional sign-in with Streamlit's OIDC (`st.login`; provider in .streamlit/secrets.toml [auth]).
    On when VITLENS_ALLOWED_EMAILS is set: only those addresses (or @domains) see the dashboard."""
    allowed = allowed_emails()
    if not allowed:
        if os.environ.get("VITLENS_ALLOWED_EMAILS", "").strip():  # set, but only separators: fail closed
            st.error("VITLENS_ALLOWED_EMAILS is set but holds no address or @domain; fix it to open the dashboard.")
            st.stop()
        return
    try:
        configured = "auth" in st.secrets
    except Exception:  # no secrets file at all
        configured = False
    if not configured:
        st.error("Sign-in is on (VITLENS_ALLOWED_EMAILS) but no [auth] provider is set in .streamlit/secrets.toml.")
        st.stop()
    if not st.user.get("is_logged_in", False):
        st.info("This vitlens server asks you to sign in.")
        st.button("Sign in", on_click=st.login, type="primary")
        st.stop()
    if not email_allowed(st.user.get("email"), allowed):
        st.error(f"{st.user.get('email')} is not on this server's allow-list.")
        st.button("Sign out", on_click=st.logout)
        st.stop()


def page(title: str, caption: str) -> None:
    """Common page header (and the sign-in gate, when configured). The title names the page's own
    state (see `value`)."""
    st.set_page_config(page_title=f"vitlens · {title}", layout="wide")
    require_sign_in()
    try:  # the job queue and its settings (VITLENS_QUEUE, VITLENS_*WORKERS, VITLENS_MAX_*): one line if wrong
        manager()
    except VitlensError as err:
        st.error(f"This server's job queue is misconfigured: {str(err).splitlines()[0]}")
        st.stop()
    st.session_state["vl__title"] = title
    st.title(title)
    st.caption(caption)


def spec_label(spec: JobSpec) -> str:
    ckpt = f" + {Path(spec.checkpoint).name}" if spec.checkpoint else ""
    return f"{spec.model}{ckpt} on {spec.dataset}/{spec.split} ({spec.samples} samples, seed {spec.seed})"
