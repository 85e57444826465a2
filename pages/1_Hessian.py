"""Hessian eigenvalues (Park & Kim Fig 1c and Fig 4)."""
import streamlit as st

from vitlens import ui

ui.analysis_header("hessian")
spec = ui.sidebar("hessian")
chosen = ui.options(spec)  # labels and steps: the declaration's Page
what = chosen["what"]


def draw(result):
    summary = result.meta.get("summary", {})
    frame = result.frame
    if what == "spectrum":
        a, b, c = st.columns(3)
        a.metric("NEP (negative share)", f"{summary.get('nep', float('nan')):.3f}")
        b.metric("APE (mean positive)", f"{summary.get('ape', float('nan')):.4g}")
        c.metric("eigenvalues pooled", f"{summary.get('count', len(frame))}")
    ui.draw_figures(result)  # the figures the declaration names for this view
    if what == "trace":
        st.dataframe(frame, hide_index=True)
    shown = {k: v for k, v in summary.items() if not k.startswith("_") and not isinstance(v, (list, dict))}
    if shown:
        st.caption(" · ".join(f"{k}: {v:.4g}" if isinstance(v, float) else f"{k}: {v}" for k, v in shown.items()))
    ui.download(result, f"hessian_{what}")


ui.show(spec, draw)
