"""2D loss landscape along filter-normalised random directions (Park & Kim Fig 1b; Li et al. 2018)."""
import streamlit as st

from vitlens import plots, ui

ui.page("Loss landscape",
        "The loss (NLL + weight decay · L2, as in the paper) at w + x·d1 + y·d2 for two random Gaussian directions, "
        "each filter rescaled to the norm of the weight's filter (Li et al. 2018); biases, norm parameters and "
        "position embeddings are not moved. The paper finds MSAs flatten the landscape: ViTs' surfaces are "
        "smoother and flatter near the optimum than ResNets'.")
spec = ui.sidebar("landscape")
grid = ui.param("grid", 11, label="grid points per axis (paper: 21)", min_value=2, max_value=101)
extent = ui.param("range", 1.0, label="range (± along each direction)", min_value=0.01, max_value=10.0, step=0.1)
weight_decay = ui.param("weight_decay", 0.05, label="weight decay in the loss", min_value=0.0, max_value=1.0,
                        step=0.01)
log_scale = ui.param("log_scale", False, label="log scale")
view = ui.param("plot", "surface", st.sidebar.selectbox, "plot", options=["surface", "contour"])
value = ui.param("value", "loss", st.sidebar.selectbox, "value", options=["loss", "nll", "accuracy"])
if spec is not None:
    spec.params = {"grid": int(grid), "range": float(extent), "weight_decay": float(weight_decay)}


def draw(result):
    summary = result.meta.get("summary", {})
    st.plotly_chart(plots.surface(result, value, bool(log_scale), view), width="stretch")
    shown = {k: v for k, v in summary.items() if isinstance(v, (int, float))}
    if shown:
        st.caption(" · ".join(f"{k}: {v:.4g}" if isinstance(v, float) else f"{k}: {v}" for k, v in shown.items()))
    bad = result.meta.get("nonfinite") or []
    if bad:
        st.warning(f"{len(bad)} grid points had a non-finite loss; they are gaps in the plot.")
    ui.download(result, "landscape")


ui.show(spec, draw)
