"""Hessian eigenvalues (Park & Kim Fig 1c and Fig 4)."""
import streamlit as st

from vitlens import plots, ui

ui.page("Hessian eigenvalues",
        "The curvature of the training loss (cross-entropy + optional weight decay, model in eval mode). "
        "Spectrum: the top-k eigenvalues (by magnitude, sign kept) of each minibatch's Hessian, pooled — the paper's "
        "'max eigenvalue spectrum'. NEP is the share of negative eigenvalues (non-convexity), APE the mean positive "
        "one (sharpness). The paper finds ViTs have many negative eigenvalues that large data sets suppress, while "
        "ResNets have large positive ones; MSAs flatten the loss.")
spec = ui.sidebar("hessian")
chosen = ui.options(spec,
                    labels={"what": "view", "top_k": "top k", "minibatches": "minibatches (0 = all)",
                            "minibatch": "minibatch size (paper: 16)", "together": "minibatches at once (0 = auto)",
                            "estimator": "trace estimator", "probes": "products at most (trace)",
                            "weight_decay": "weight decay (shifts eigenvalues)"},
                    weight_decay={"step": 0.0001})
what = chosen["what"]


def draw(result):
    summary = result.meta.get("summary", {})
    frame = result.frame
    if what == "spectrum":
        a, b, c = st.columns(3)
        a.metric("NEP (negative share)", f"{summary.get('nep', float('nan')):.3f}")
        b.metric("APE (mean positive)", f"{summary.get('ape', float('nan')):.4g}")
        c.metric("eigenvalues pooled", f"{summary.get('count', len(frame))}")
        st.plotly_chart(plots.spectrum_density(result), width="stretch")
    elif what == "topk":
        st.plotly_chart(plots.eigen_bars(result), width="stretch")
    elif what == "trace":
        st.plotly_chart(plots.line(frame, "estimator", "estimate", "Hessian trace (± standard error)", "stderr"),
                        width="stretch")
        st.dataframe(frame, hide_index=True)
    elif what == "density":
        st.plotly_chart(plots.line(frame, "grid", "density", "Eigenvalue density (stochastic Lanczos quadrature)"),
                        width="stretch")
    else:
        st.plotly_chart(plots.depth_curve(result, "top_eigenvalue", "Top eigenvalue of each block's Hessian",
                                          "top eigenvalue"), width="stretch")
        st.plotly_chart(plots.depth_curve(result, "trace", "Hessian trace of each block", "trace"), width="stretch")
    shown = {k: v for k, v in summary.items() if not k.startswith("_") and not isinstance(v, (list, dict))}
    if shown:
        st.caption(" · ".join(f"{k}: {v:.4g}" if isinstance(v, float) else f"{k}: {v}" for k, v in shown.items()))
    ui.download(result, f"hessian_{what}")


ui.show(spec, draw)
