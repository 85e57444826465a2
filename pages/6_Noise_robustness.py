"""Robustness to frequency-band noise (Park & Kim Fig 2b)."""
import streamlit as st

from vitlens import plots, ui

ui.page("Noise robustness by frequency",
        "Accuracy change when random noise restricted to a ring of the centred 2D spectrum (frequency f, width s, "
        "amplitude eps) is added to the images. The paper finds ViTs robust to high-frequency noise and ResNets "
        "vulnerable to it.")
spec = ui.sidebar("noise")
frequencies = ui.param("frequencies", 11, label="frequencies (count in [0, π])", min_value=2, max_value=64)
width = ui.param("width", 0.1, label="band width (×π)", min_value=0.01, max_value=1.0, step=0.01)
eps = ui.param("eps", 0.1, label="noise amplitude eps", min_value=0.0, max_value=10.0, step=0.05)
if spec is not None:
    spec.params = dict(frequencies=int(frequencies), width=float(width), eps=float(eps))


def draw(result):
    st.plotly_chart(plots.noise_curve(result), width="stretch")
    ui.download(result, "noise")


ui.show(spec, draw)
