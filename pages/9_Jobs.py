"""Jobs: the queue, progress, errors; cancel a running job."""
import pandas as pd
import streamlit as st

from vitlens import ui
from vitlens.jobs import manager

ui.page("Jobs", "Computations run in the background, one at a time per worker (VITLENS_WORKERS); identical "
        "requests share one job. Results land in the disk cache and show on their page at once.")
ui.sidebar("")


@st.fragment(run_every=1.0)
def table():
    jobs = manager().jobs()
    if not jobs:
        st.info("No jobs yet in this server process.")
        return
    st.dataframe(pd.DataFrame([j.summary() for j in jobs]), hide_index=True, width="stretch")
    active = [j for j in jobs if j.active]
    if active:
        pick = st.selectbox("Cancel a job", [j.id for j in active],
                            format_func=lambda i: f"{i} ({manager().get(i).spec.analysis})")
        if st.button("Cancel job"):
            manager().cancel(pick)


table()
