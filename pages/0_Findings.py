"""The paper's findings, checked on the selected models: a verdict, its numbers and a link per claim."""
import json

import streamlit as st

from vitlens import ui
from vitlens.claims import CLAIMS

ui.analysis_header("findings")
spec = ui.sidebar("findings")
ui.options(spec)  # labels and steps: the declaration's Page

VERDICT_MARK = {"holds": "✅ holds", "does not hold": "❌ does not hold", "cannot tell": "❔ cannot tell"}


def draw(result):
    frame = result.frame
    s = result.meta.get("summary", {})
    a, b, c = st.columns(3)
    a.metric("holds", s.get("holds", 0))
    b.metric("does not hold", s.get("does not hold", 0))
    c.metric("cannot tell", s.get("cannot tell", 0))
    table = frame.assign(verdict=frame["verdict"].map(lambda v: VERDICT_MARK.get(v, v)))
    st.dataframe(table[["claim", "model", "verdict", "values", "reason", "figure", "link"]], hide_index=True,
                 width="stretch",
                 column_config={"link": st.column_config.LinkColumn("evidence", display_text="open view")})
    for claim in CLAIMS.values():
        rows = frame[frame["claim"] == claim.id]
        if rows.empty:
            continue
        with st.expander(f"{claim.id}: {claim.statement}"):
            for r in rows.to_dict("records"):
                links = json.loads(r["links"]) if r["links"] else []
                refs = " · ".join(f"[view {k + 1}]({u})" for k, u in enumerate(links))
                st.markdown(f"**{ui.plain(r['model'])}** — {VERDICT_MARK.get(r['verdict'], r['verdict'])}: "
                            f"{ui.plain(r['reason'])} ({ui.plain(r['values'])}; {r['figure']}) {refs}")
    ui.download(result, "findings")


ui.show(spec, draw)
if spec is not None:
    ui.report_buttons(spec)  # the models above as one HTML file (and W&B)
