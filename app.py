"""vitlens dashboard — landing page. Run with `streamlit run app.py`.

Pages live in pages/ (Streamlit's file-based discovery, so deep links with query parameters work
on a freshly started server); each one draws the shared sidebar and calls the vitlens backend.
"""
from dataclasses import replace

import pandas as pd
import streamlit as st

import vitlens
from vitlens import plots, ui
from vitlens.analyses import pages
from vitlens.analyses.findings import scoreboard_spec
from vitlens.jobs import JobYielded

ui.page("vitlens — how do vision transformers work?",
        f"vitlens {vitlens.__version__} · the analyses of Park & Kim, How Do Vision Transformers Work? (ICLR 2022)")
st.markdown(
    "Pick a model and a data set in the sidebar; every page shows one of the paper's views of it, computed "
    "in the background and cached on disk. Every choice is in the URL: copy it to share the view.\n\n"
    + "\n".join(f"- **[{a.page.title}]({a.page.slug})** — {a.description}" for a in pages())
    + "\n- **[Compare](Compare)** — several models on one axis; **[Jobs](Jobs)** — the queue.\n\n"
    "The default selection is the demo models (a mini ResNet, ViT and AlterNet) on the embedded data set "
    "(scikit-learn's handwritten digits), which works offline.")

spec = ui.sidebar("evaluate")
if spec is not None:
    spec = replace(spec, params={})
    st.subheader(f"Selected: {ui.spec_label(spec)}")

    def draw(result):
        s = result.meta["summary"]
        a, b, c = st.columns(3)
        a.metric("accuracy", f"{s['accuracy']:.2%}")
        b.metric("NLL", f"{s['nll']:.4f}")
        c.metric("ECE (calibration error)", f"{s['ece']:.4f}")
        st.plotly_chart(plots.reliability_diagram(result), width="stretch")
        st.caption("Bars: accuracy of the predictions in each confidence bin; the dashed line is perfect "
                   "calibration. ECE is the sample-weighted gap (Guo et al. 2017).")
        ui.download(result, "evaluate")

    ui.show(spec, draw, autorun=True)

    st.subheader("Demo models at a glance")
    rows = []
    for name in ("demo_resnet", "demo_vit", "demo_alternet"):
        demo = replace(spec, model=name, model_args={}, checkpoint=None, params={})
        result, job = ui.result_or_job(demo, autorun=True)
        if result is None:
            rows.append({"model": name, "accuracy": None, "NLL": None, "ECE": None, "status": job.state})
        else:
            s = result.meta["summary"]
            rows.append({"model": name, "accuracy": s["accuracy"], "NLL": s["nll"], "ECE": s["ece"],
                         "status": "done"})
    st.dataframe(pd.DataFrame(rows), hide_index=True)


# ---- findings scoreboard of the demo models (pages/0_Findings.py has the full table)
if spec is not None:
    st.subheader("The paper's findings on the demo models")
    board_spec = scoreboard_spec(spec)
    # unasked: at the lowest priority, and it steps aside when a user's job needs its worker
    board, board_job = ui.result_or_job(board_spec, autorun=True, background=True)
    if board is None:
        state = board_job.state if board_job is not None else "not started"
        if board_job is not None and board_job.message == JobYielded.requeued:
            state = "paused while your jobs run"
        st.info(f"Computing the scoreboard in the background ({state}; a few minutes on CPU, then cached; "
                "it steps aside for any job you start).")
    else:
        tally = board.meta.get("summary", {})
        st.caption(f"{tally.get('holds', 0)} hold · {tally.get('does not hold', 0)} do not hold · "
                   f"{tally.get('cannot tell', 0)} cannot tell — models {', '.join(tally.get('models', []))}")
        st.dataframe(board.frame[["claim", "model", "verdict", "values", "figure", "link"]], hide_index=True,
                     width="stretch",
                     column_config={"link": st.column_config.LinkColumn("evidence", display_text="open view")})
    st.caption("What this can show: the embedded data set is 8x8 handwritten digits upscaled to 32x32 and the "
               "demo models are tiny, so these verdicts test the paper's rules on toy models; its CIFAR-100 "
               "numbers need CIFAR and the authors' checkpoints (see README 'Findings').")
