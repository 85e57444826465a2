"""Feature-map variance vs depth (Park & Kim Fig 9)."""
import streamlit as st

from vitlens import plots, ui

ui.page("Feature-map variance",
        "Variance of each block's output feature map over spatial positions, averaged over images and channels, "
        "vs normalised depth. The paper finds that MSAs (blue bands) reduce feature-map variance and convolutions "
        "increase it; in multi-stage nets the variance peaks at the end of each stage.")
spec = ui.sidebar("variance")


def draw(result):
    st.plotly_chart(plots.variance_curve(result), width="stretch")
    ui.download(result, "variance")


ui.show(spec, draw)
