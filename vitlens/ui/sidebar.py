"""The sidebar: the shared selection (the request's fields, drawn from their one declaration in
`vitlens.request`) and the widgets of a page's analysis options (from the analysis' declaration)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import streamlit as st

from ..declarations import get_analysis
from ..data import DATASET_NAMES
from ..errors import VitlensError
from ..models import list_models
from ..models.registry import check_model_args
from ..models.sizing import size_model
from ..options import Option
from ..store.paths import checkpoint_root, data_root, list_checkpoints, resolve_inside
from ..request import JobSpec, request_option
from .state import LINK_ERRORS_KEY, NAMES_KEY, PAGE_KEY, TRUSTED_KEY, plain, show_link_errors, store_key, sync_url, value, widget
from .uploads import UPLOADS, save_upload, upload_folder

DATASETS = [*DATASET_NAMES, "folder"]
DEVICES = ["auto", "cpu", "cuda"]
TIMM_CHOICE = "timm: (any timm model)"


def _registry_names() -> list[str]:
    return [e.name for e in list_models()]


def options(spec: JobSpec | None, names: list[str] | None = None, labels: dict | None = None,
            **widget_args) -> dict:
    """Draw the widgets of SPEC's analysis options (NAMES, default those its `Page` draws; in that
    order) from their declarations, and set spec.params to the values drawn. An option whose
    `applies` rule does not hold for the values above it is not drawn and stays at its default.
    LABELS and WIDGET_ARGS (step, format) add to the page's declared ones."""
    analysis = get_analysis(_scope_analysis())
    chosen = [analysis.option(n) for n in (analysis.shown if names is None else names)]
    page = analysis.page
    labels = dict(page.labels if page else {}, **(labels or {}))
    widget_args = {**(page.widget_args if page else {}), **widget_args}
    values = dict(analysis.defaults)
    shown = {}
    for opt in chosen:
        if opt.applies and not opt.applies_to(values):
            continue
        values[opt.name] = shown[opt.name] = _option_widget(opt, labels.get(opt.name), widget_args.get(opt.name, {}))
    sync_url()
    show_link_errors()
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
    if opt.list_of is not None:  # a count, or a list from a link: a list is edited as JSON text
        current = value(opt.name, opt.default, scoped=True, parse=opt.parse)
        if isinstance(current, (list, tuple, str)):
            if not isinstance(current, str):
                st.session_state[store_key(opt.name, True)] = opt.text(current)
            text = widget(opt.name, opt.text(opt.default), sb.text_input, label, scoped=True, parse=str,
                          help=common["help"])
            try:
                return opt.parse(text)
            except VitlensError as err:
                sb.error(plain(str(err)))
                return opt.default
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
        sb.error(plain(str(err)))
        return opt.default


def _scope_analysis() -> str:
    return st.session_state.get("vl__analysis", "")


def _field(name: str, label: str, **kwargs) -> Any:
    """The widget of the request field NAME: its default, bounds, choices, help and URL parsing
    come from the field's declaration (`vitlens.request.REQUEST_OPTIONS`). A link's value the
    declaration refuses (seed=-5, samples=1e9) is the default, as the CLI would refuse it."""
    opt = request_option(name)
    common = dict(parse=opt.parse, help=f"{opt.help} ({opt.describe()})")
    sb = st.sidebar
    if "options" in kwargs or opt.choices:
        choices = list(kwargs.pop("options", opt.choices))
        current = value(name, opt.default, parse=opt.parse)
        if current not in choices:  # a valid value the list does not offer (device cuda:1): keep it
            choices.append(current)
        return widget(name, opt.default, sb.selectbox, label, options=choices, **common, **kwargs)
    if opt.type is int:
        bounds = {k: int(v) for k, v in (("min_value", opt.low), ("max_value", opt.high)) if v is not None}

        def parse(raw):  # the dashboard has no "all": a link's samples=all is the default
            parsed = opt.parse(raw)
            return opt.default if parsed is None else parsed
        return widget(name, opt.default, sb.number_input, label, **dict(common, parse=parse), **bounds, **kwargs)
    return widget(name, opt.default if opt.default is not None else "", sb.text_input, label, **common, **kwargs)


def sidebar(analysis: str = "") -> JobSpec | None:
    """Draw the shared selection and return the JobSpec it describes (None if it is invalid).
    ANALYSIS is the one this page's `options()` draws (empty for pages that only compare)."""
    st.session_state["vl__analysis"] = analysis
    st.session_state[NAMES_KEY] = []
    st.session_state["vl__requests"] = {}  # request ids of this run (`jobview.request_of`)
    scope = analysis or st.session_state.get("vl__title", "")
    if PAGE_KEY not in st.session_state:
        st.session_state[TRUSTED_KEY] = scope  # the session opened here: the URL is a link to this page
    st.session_state[PAGE_KEY] = scope
    sb = st.sidebar
    sb.header("Selection")
    names = _registry_names()
    model = value("model", request_option("model").default, parse=request_option("model").parse)
    if model not in names and not model.startswith("timm:"):  # a link's unknown name: say so, show the default
        st.session_state.setdefault(LINK_ERRORS_KEY, []).append(
            f"unknown model {model!r} (`vitlens models` lists them); using the default")
        model = st.session_state["vl_model"] = request_option("model").default
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
                        placeholder='{"num_classes": 10, "img_size": 32}', help=request_option("model_args").help)
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
            checkpoint = save_upload(upload)
            st.session_state["vl_checkpoint"] = checkpoint
            st.session_state["vl_last_upload"] = (upload.name, upload.size)
            st.rerun()
        except VitlensError as err:
            sb.error(plain(str(err)))
    dataset = widget("dataset", request_option("dataset").default, sb.selectbox, "Data set", options=DATASETS)
    folder = ""
    if dataset == "folder":
        folder = widget("folder", "", sb.text_input, "Folder (inside the data root)",
                        help=f"an ImageFolder tree under {data_root()}")
    values = dict(split=_field("split", "Split"), samples=_field("samples", "Samples", step=64),
                  seed=_field("seed", "Seed"), batch_size=_field("batch_size", "Batch size"),
                  device=_field("device", "Device", options=DEVICES))
    sync_url(clean=False)
    show_link_errors()
    sb.header("Analysis")
    try:
        args = check_model_args(request_option("model_args").parse(model_args))
        request_option("model").parse(model)
        size_model(model, args)  # bounds and a build on the meta device (cached): refused before any job
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
        st.error(plain(f"Selection: {err}".splitlines()[0]))
        return None
    return JobSpec(analysis=analysis, model=model, model_args=args, checkpoint=ckpt_path, dataset=data_spec,
                   **values)


def spec_label(spec: JobSpec) -> str:
    ckpt = f" + {Path(spec.checkpoint).name}" if spec.checkpoint else ""
    return f"{spec.model}{ckpt} on {spec.dataset}/{spec.split} ({spec.samples} samples, seed {spec.seed})"
