"""Compare models: the same analysis overlaid on normalised depth, and test error vs train NLL."""
import time
from dataclasses import replace

import pandas as pd
import streamlit as st

from vitlens import plots, ui
from vitlens.analyses.findings import parse_models
from vitlens.errors import VitlensError
from vitlens.figures import COMPARE_VIEWS, compare

ui.page("Compare models",
        "The same analysis for several models on one normalised-depth axis (e.g. ResNet vs ViT vs AlterNet), "
        "and the paper's Fig 1a: test error vs train NLL. Results computed on other pages are reused.")
base = ui.sidebar("")
picked = ui.control("compare", "demo_resnet,demo_vit,demo_alternet", label="models (comma-separated specs)")
view = ui.control("view", "variance", st.sidebar.selectbox, "view",
                  options=[*COMPARE_VIEWS, "error_vs_nll"])
try:
    models = parse_models(picked, "models")  # each a valid spec, none twice, at most VITLENS_MAX_MODELS
except VitlensError as err:
    st.error(ui.plain(str(err)))
    models = []
pending = []


def fetch(spec):
    """The Result of SPEC, or None while its job runs (started for cheap demo models)."""
    result, job = ui.result_or_job(spec)
    if result is not None:
        return result
    if job is not None and job.state == "failed":
        st.error(ui.plain(f"{spec.model}: {job.error}"))
    elif job is not None and job.active:
        st.info(ui.plain(f"{spec.model}: {job.state} {job.fraction:.0%}"))
        pending.append(job)
    else:
        st.info(ui.plain(f"{spec.model}: not computed yet (open its page and press Run)"))
    return None


if base is not None and models:
    if view == "error_vs_nll":
        points = []
        for m in models:
            train = fetch(replace(base, model=m, analysis="evaluate", split="train", params={}))
            test = fetch(replace(base, model=m, analysis="evaluate", split="test", params={}))
            if train is not None and test is not None:
                points.append(dict(model=m, train_nll=train.meta["summary"]["nll"],
                                   test_error=1 - test.meta["summary"]["accuracy"]))
        if points:
            st.plotly_chart(plots.error_vs_nll(pd.DataFrame(points)), width="stretch")
            st.caption("Lower-left is better. The paper finds ViTs' train NLL is higher (they fit the "
                       "augmented data less) and that this, not overfitting, limits them on small data.")
            st.download_button("Download CSV", pd.DataFrame(points).to_csv(index=False).encode(),
                               file_name="error_vs_nll.csv")
    else:
        got = [(m, r) for m in models if (r := fetch(replace(base, model=m, analysis=view, params={}))) is not None]
        frames = [r.frame.assign(model=m) for m, r in got]
        if got:
            fig = compare([r for _, r in got], view, [m for m, _ in got])  # as vitlens.compare draws it
            st.plotly_chart(fig, width="stretch")
            st.caption("Curves share the normalised-depth axis (stem 0, last body block 1). Shading shows the "
                       "block kinds of each model (blue MSA, grey pooling).")
            st.download_button("Download CSV", pd.concat(frames).to_csv(index=False).encode(),
                               file_name=f"compare_{view}.csv")
if pending:  # poll until the jobs this view waits for are done
    time.sleep(1.0)
    st.rerun()
