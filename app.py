"""vitlens dashboard — landing page (placeholder until the dashboard issue lands).

Run with `streamlit run app.py`. It shows the default selection (the demo models on the embedded
digits data set) and their accuracy, NLL and calibration, computed through the vitlens backend and
served from the disk cache after the first run.
"""
import pandas as pd
import streamlit as st

import vitlens
from vitlens.analyses import JobSpec, run
from vitlens.errors import VitlensError

st.set_page_config(page_title="vitlens", layout="wide")
st.title("vitlens — how do vision transformers work?")
st.markdown(
    "Analyses of Park & Kim, *How Do Vision Transformers Work?* (ICLR 2022) for any model: Hessian "
    "spectra, loss landscapes, Fourier and variance of feature maps, lesions, and more. "
    "This first page shows the demo models on the embedded data set (scikit-learn's handwritten digits).")

rows = []
for name in ("demo_resnet", "demo_vit", "demo_alternet"):
    try:
        result, cached = run(JobSpec(analysis="evaluate", model=name, dataset="digits", split="test",
                                     samples=None, device="cpu"))
        s = result.meta["summary"]
        rows.append({"model": name, "accuracy": s["accuracy"], "NLL": s["nll"], "ECE": s["ece"],
                     "from cache": cached})
    except VitlensError as err:
        st.error(str(err))
if rows:
    st.dataframe(pd.DataFrame(rows), hide_index=True)
st.caption(f"vitlens {vitlens.__version__}")
