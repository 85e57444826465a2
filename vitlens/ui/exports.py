"""The dashboard's ways out: the HTML report of the selected models (download) and W&B export
(when `wandb` is installed)."""
from __future__ import annotations

import importlib.util
from dataclasses import replace

import streamlit as st

from ..analyses.findings import parse_models
from ..errors import VitlensError
from ..report import gather, render
from ..request import JobSpec
from .state import plain


def report_buttons(spec: JobSpec) -> None:
    """Under the findings scoreboard of SPEC: build and download the report of its models (the
    scoreboard's Results come from the cache; what is missing, e.g. each model's evaluation, is
    computed here), and log it to W&B."""
    st.subheader("Report")
    options = {k: v for k, v in spec.params.items() if k != "models"}
    try:
        models = parse_models(spec.params.get("models", ""))
    except VitlensError as err:
        st.error(plain(str(err)))
        return
    key = ("vl_report", spec.to_json())
    if st.button("Build the HTML report", key="build_report"):
        with st.spinner(f"building the report of {len(models)} models"):
            try:
                report = gather(replace(spec, params={}), models, options)
                st.session_state["vl_report"] = (key, render(report), report)
            except VitlensError as err:
                st.error(plain(str(err).splitlines()[0]))
    built = st.session_state.get("vl_report")
    if built and built[0] == key:
        st.download_button("Download report", built[1].encode(), file_name="vitlens_report.html",
                           mime="text/html", key="download_report")
        if importlib.util.find_spec("wandb") is not None:
            project = st.text_input("W&B project", value="vitlens", key="wandb_project")
            if st.button("Log to W&B", key="log_wandb"):
                from ..wandb_export import log_report  # deferred: optional extra
                try:
                    st.success(f"logged: {log_report(built[2], None, project)}")
                except Exception as err:  # W&B refuses (not signed in, no network): one line
                    st.error(plain(f"W&B: {str(err).splitlines()[0][:200]}"))
