"""Feature-map similarity between blocks: linear CKA (Park & Kim Sec. 4)."""
import streamlit as st

from vitlens import plots, ui

ui.page("Feature similarity (CKA)",
        "Linear CKA between the outputs of every pair of blocks, with the unbiased minibatch HSIC estimator "
        "(Nguyen et al. 2021). Multi-stage networks show a block structure: features are similar within a stage "
        "and change at the stage boundaries.")
spec = ui.sidebar("cka")


def draw(result):
    st.plotly_chart(plots.cka_heatmap(result), width="stretch")
    ui.download(result, "cka")


ui.show(spec, draw)
