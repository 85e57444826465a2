"""Lesion study: remove one block's residual branch at a time (Park & Kim Sec. 4)."""
import streamlit as st

from vitlens import plots, ui

ui.page("Lesion study",
        "Accuracy drop when one block's residual branch is replaced by the identity (only the shortcut kept). "
        "The paper finds that removing an MSA near the end of a stage hurts far more than removing one early, "
        "which is why AlterNet puts MSAs at stage ends.")
spec = ui.sidebar("lesion")


def draw(result):
    summary = result.meta.get("summary", {})
    if summary:
        st.metric("intact accuracy", f"{summary.get('intact_accuracy', float('nan')):.2%}")
    st.plotly_chart(plots.lesion_bars(result), width="stretch")
    ui.download(result, "lesion")


ui.show(spec, draw)
