"""2D loss landscape along filter-normalised random directions (Park & Kim Fig 1b; Li et al. 2018), or the
loss along a 1D path."""
import streamlit as st

from vitlens import plots, ui
from vitlens.store.reference import list_references, reference

ui.analysis_header("landscape")
spec = ui.sidebar("landscape")
ui.options(spec)  # labels and steps: the declaration's Page
log_scale = ui.control("log_scale", False, label="log scale")
view = ui.control("plot", "surface", st.sidebar.selectbox, "plot", options=["surface", "contour"])
value = ui.control("value", "loss", st.sidebar.selectbox, "value", options=["loss", "nll", "accuracy"])
paper = ui.control("paper", "none", st.sidebar.selectbox, "beside the paper's landscape",
                   options=["none", *(r.name for r in list_references())],
                   help="the authors' published Fig 1b data (CIFAR-100, their checkpoints and settings)")


def draw(result):
    summary = result.meta.get("summary", {})
    if result.meta.get("dims") == 1:  # directions path: a curve along x
        figure = plots.path_curve(result, value)
    elif paper != "none":  # the user's surface and the paper's, on one colour scale
        ref = reference(paper)
        zrange = plots.value_range([result, ref], value, bool(log_scale))
        left, right = st.columns(2)
        left.plotly_chart(plots.surface(result, value, bool(log_scale), view, zrange=zrange), width="stretch")
        right.plotly_chart(plots.surface(ref, value, bool(log_scale), view, zrange=zrange,
                                         title=f"The paper's {ref.meta['model']} (CIFAR-100)"), width="stretch")
        right.caption(ref.meta["caption"])
        figure = None
    else:
        figure = plots.surface(result, value, bool(log_scale), view)
    if figure is not None:
        st.plotly_chart(figure, width="stretch")
    shown = {k: v for k, v in summary.items() if isinstance(v, (int, float))}
    if shown:
        st.caption(" · ".join(f"{k}: {v:.4g}" if isinstance(v, float) else f"{k}: {v}" for k, v in shown.items()))
    bad = result.meta.get("nonfinite") or []
    if bad:
        st.warning(f"{len(bad)} grid points had a non-finite loss; they are gaps in the plot.")
    ui.download(result, "landscape")


ui.show(spec, draw)
