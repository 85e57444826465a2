"""Robustness to frequency-band noise (Park & Kim Fig 2b)."""
import streamlit as st

from vitlens import plots, ui

ui.page("Noise robustness by frequency",
        "Accuracy change when random noise restricted to a ring of the centred 2D spectrum (frequency f, width s, "
        "amplitude eps) is added to the images. The paper finds ViTs robust to high-frequency noise and ResNets "
        "vulnerable to it.")
spec = ui.sidebar("noise")
ui.options(spec,
           labels={"frequencies": "frequencies (count in [0, π])", "eps": "noise amplitude eps",
                   "s": "band half-width s (radians)", "width": "band width (×π)"},
           eps={"step": 0.05}, width={"step": 0.01})


def draw(result):
    st.plotly_chart(plots.noise_curve(result), width="stretch")
    ui.download(result, "noise")


ui.show(spec, draw)
