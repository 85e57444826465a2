"""Streamlit pieces every dashboard page shares: the sidebar, URL state, jobs and result views.

State lives in three places, kept in step on every run:
  * the URL (`st.query_params`): every choice and every analysis parameter, so a copied link opens
    the same view for a teammate, also on a freshly started server;
  * `st.session_state["vl_<name>"]`: survives page switches (Streamlit forgets widget state of
    widgets a page does not draw, and drops the query string on navigation);
  * the widget itself (key `w_<name>`), whose change callback writes the session value.
Pages hold no torch code: they call `sidebar()`, `param()`, then `show(spec, draw)`.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Callable

import streamlit as st

from .analyses import JobSpec, cached_result
from .errors import VitlensError
from .jobs import CANCELLED, DONE, FAILED, manager
from .result import Result

DATASETS = ["digits", "synthetic", "cifar10", "cifar100", "folder"]
DEVICES = ["auto", "cpu", "cuda"]
TIMM_CHOICE = "timm: (any timm model)"


def _registry_names() -> list[str]:
    from .models import list_models
    return [e.name for e in list_models()]


# ----------------------------------------------------------------------------- URL-backed values

def _cast(value: Any, default: Any) -> Any:
    if isinstance(default, bool):
        return str(value).lower() in ("1", "true", "yes", "on")
    if isinstance(default, int):
        return int(float(value))
    if isinstance(default, float):
        return float(value)
    return str(value)


def value(name: str, default: Any) -> Any:
    """The current value of NAME: session, else URL, else DEFAULT."""
    store = f"vl_{name}"
    if store not in st.session_state:
        raw = st.query_params.get(name)
        try:
            st.session_state[store] = default if raw is None else _cast(raw, default)
        except (TypeError, ValueError):
            st.session_state[store] = default
    return st.session_state[store]


def _set(name: str) -> None:
    st.session_state[f"vl_{name}"] = st.session_state[f"w_{name}"]


def widget(name: str, default: Any, render: Callable, label: str, **kwargs) -> Any:
    """Draw a widget whose value is stored under NAME (session + URL)."""
    current = value(name, default)
    key = f"w_{name}"
    if "options" in kwargs and current not in kwargs["options"]:
        current = default if default in kwargs["options"] else kwargs["options"][0]
        st.session_state[f"vl_{name}"] = current
    if key not in st.session_state or st.session_state[key] != current:
        st.session_state[key] = current
    render(label, key=key, on_change=_set, args=(name,), **kwargs)
    return st.session_state[f"vl_{name}"]


def _sync_url(names: list[str]) -> None:
    want = {n: str(st.session_state[f"vl_{n}"]) for n in names if f"vl_{n}" in st.session_state}
    if {k: st.query_params.get(k) for k in want} != want:
        st.query_params.update(want)


_PAGE_PARAMS: list[str] = []


def param(name: str, default: Any, render: Callable | None = None, label: str | None = None, **kwargs) -> Any:
    """An analysis parameter, drawn in the sidebar's "Analysis" section and kept in the URL."""
    if render is None:
        if isinstance(default, bool):
            render = st.sidebar.checkbox
        elif isinstance(default, (int, float)):
            render = st.sidebar.number_input
        else:
            render = st.sidebar.text_input
    _PAGE_PARAMS.append(name)
    out = widget(name, default, render, label or name.replace("_", " "), **kwargs)
    _sync_url(_PAGE_PARAMS)
    return out


# ----------------------------------------------------------------------------- sidebar

SPEC_FIELDS = ["model", "model_args", "checkpoint", "dataset", "folder", "split", "samples", "seed",
               "batch_size", "device"]


def _save_upload(upload) -> str:
    """Store an uploaded checkpoint under the checkpoint root (name from its hash); returns the
    path relative to the root. It is only ever loaded as data (weights_only / safetensors)."""
    from .paths import checkpoint_root
    data = upload.getvalue()
    suffix = next((s for s in (".safetensors", ".pth.tar", ".pth", ".pt") if upload.name.endswith(s)), None)
    if suffix is None:
        raise VitlensError(f"upload '{upload.name}' must be .safetensors, .pt, .pth or .pth.tar")
    folder = checkpoint_root() / "uploads"
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    name = f"{hashlib.sha256(data).hexdigest()[:16]}{suffix}"
    (folder / name).write_bytes(data)
    return f"uploads/{name}"


def sidebar(analysis: str = "") -> JobSpec | None:
    """Draw the shared selection and return the JobSpec it describes (None if it is invalid)."""
    from .paths import checkpoint_root, data_root, list_checkpoints, resolve_inside
    _PAGE_PARAMS.clear()
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
    checkpoints = [""] + list_checkpoints()
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
    _sync_url(SPEC_FIELDS)
    sb.header("Analysis")
    try:
        args = json.loads(model_args) if model_args.strip() else {}
        if not isinstance(args, dict):
            raise VitlensError("model args must be a JSON object")
        ckpt_path = str(resolve_inside(checkpoint_root(), checkpoint, "checkpoint")) if checkpoint else None
        data_spec = dataset
        if dataset == "folder":
            data_spec = f"folder:{resolve_inside(data_root(), folder, 'data folder')}"
    except (json.JSONDecodeError, VitlensError) as err:
        st.error(f"Selection: {err}".splitlines()[0])
        return None
    return JobSpec(analysis=analysis, model=model, model_args=args, checkpoint=ckpt_path, dataset=data_spec,
                   split=split, samples=int(samples), seed=int(seed), batch_size=int(batch_size), device=device)


# ----------------------------------------------------------------------------- jobs and views

def autorun_default(spec: JobSpec) -> bool:
    """Start cheap jobs (the demo models) as soon as a page opens; others wait for Run."""
    return spec.model.startswith("demo_") and (spec.samples or 0) <= 2048


def result_or_job(spec: JobSpec, autorun: bool | None = None):
    """(Result, None) when SPEC was computed before, else (None, its latest job or None).

    A job is submitted here when AUTORUN (default: cheap demo models, see `autorun_default`) and
    none exists, or when a finished job's Result has since been evicted from the cache."""
    result = cached_result(spec)
    if result is not None:
        return result, None
    jobs = manager()
    job = jobs.find(spec)
    autorun = autorun_default(spec) if autorun is None else autorun
    if (job is None and autorun) or (job is not None and job.state == DONE):
        job = jobs.submit(spec)
    return None, job


def show(spec: JobSpec | None, draw: Callable[[Result], None], autorun: bool | None = None) -> Result | None:
    """Show SPEC's Result: from the cache at once, else as a background job with progress."""
    if spec is None:
        return None
    result, job = result_or_job(spec, autorun)
    if result is not None:
        draw(result)
        return result
    if job is None or job.state == CANCELLED:
        if st.button("Run", type="primary", key=f"run_{spec.analysis}"):
            manager().submit(spec)
            st.rerun()
        st.info("Not computed yet: press Run (it runs in the background; you can switch pages).")
        return None
    if job.state == FAILED:
        st.error(job.error or "the job failed")
        if st.button("Try again", key=f"retry_{spec.analysis}"):
            manager().submit(spec)
            st.rerun()
        return None
    _progress(job.id)
    return None


@st.fragment(run_every=0.5)
def _progress(job_id: str) -> None:
    job = manager().get(job_id)
    if job is None:
        return
    if not job.active:
        st.rerun(scope="app")
    eta = job.eta()
    left = f", about {eta:.0f}s left" if eta is not None else ""
    text = f"{job.spec.analysis} on {job.spec.model}: {job.state} {job.fraction:.0%}{left} {job.message}"
    st.progress(min(max(job.fraction, 0.0), 1.0), text=text)
    if st.button("Cancel", key=f"cancel_{job_id}"):
        manager().cancel(job_id)


def download(result: Result, name: str) -> None:
    """CSV download of a Result's tidy frame."""
    st.download_button("Download CSV", result.frame.to_csv(index=False).encode(), file_name=f"{name}.csv",
                       mime="text/csv", key=f"dl_{name}")


def allowed_emails() -> set[str]:
    """$VITLENS_ALLOWED_EMAILS: comma-separated addresses or @domain entries; empty = sign-in off."""
    import os
    return {e.strip().lower() for e in os.environ.get("VITLENS_ALLOWED_EMAILS", "").split(",") if e.strip()}


def email_allowed(email: str | None, allowed: set[str]) -> bool:
    email = (email or "").strip().lower()
    return bool(email) and (email in allowed or any(a.startswith("@") and email.endswith(a) for a in allowed))


def require_sign_in() -> None:
    """Optional sign-in with Streamlit's OIDC (`st.login`; provider in .streamlit/secrets.toml [auth]).
    On when VITLENS_ALLOWED_EMAILS is set: only those addresses (or @domains) see the dashboard."""
    allowed = allowed_emails()
    if not allowed:
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
    """Common page header (and the sign-in gate, when configured)."""
    st.set_page_config(page_title=f"vitlens · {title}", layout="wide")
    require_sign_in()
    st.title(title)
    st.caption(caption)


def spec_label(spec: JobSpec) -> str:
    ckpt = f" + {Path(spec.checkpoint).name}" if spec.checkpoint else ""
    return f"{spec.model}{ckpt} on {spec.dataset}/{spec.split} ({spec.samples} samples, seed {spec.seed})"
