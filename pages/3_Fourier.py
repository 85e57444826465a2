"""Fourier analysis of feature maps (Park & Kim Fig 2a and Fig 8)."""
import streamlit as st

from vitlens import plots, ui

ui.page("Fourier analysis of feature maps",
        "Relative log amplitude of the Fourier-transformed feature map of every block: log|FFT| averaged over "
        "images and channels, along the half-diagonal from frequency 0 to π, minus its value at 0. The paper "
        "finds that MSAs (blue bands) reduce high-frequency amplitude — they act like low-pass filters — while "
        "convolutions amplify it.")
spec = ui.sidebar("fourier")
ui.options(spec)
if spec is not None:
    st.caption(ui.spec_label(spec))


def draw(result):
    left, right = st.columns(2)
    left.plotly_chart(plots.fourier_curves(result), width="stretch")
    right.plotly_chart(plots.fourier_high_frequency(result), width="stretch")
    st.caption("Left: one curve per block, yellow = deep. Right: the value at π vs normalised depth; "
               "blue bands are MSA blocks, grey bands pooling.")
    ui.download(result, "fourier")


ui.show(spec, draw)
