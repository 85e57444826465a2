"""Jobs: the queue, progress, errors, the workers; cancel a job."""
import pandas as pd
import streamlit as st

from vitlens import ui
from vitlens.jobs import manager
from vitlens.jobs.manager import is_admin
from vitlens.jobs.queue import recovery_note

ui.page("Jobs", "Computations run in worker processes (`vitlens worker`, one job at a time each) that take "
        "jobs from a shared queue; identical requests share one job, quick analyses go first. Jobs survive a "
        "restart of the dashboard or a worker. Results land in the disk cache and show on their page at once.")
ui.sidebar("")


@st.fragment(run_every=1.0)
def table():
    jobs = manager()
    workers = jobs.workers()
    st.caption(f"Workers online: {len(workers)}"
               + (" — " + ", ".join(f"{w['name']} ({'busy' if w.get('job') else 'idle'})" for w in workers)
                  if workers else " (one is starting, or start `vitlens worker`)")
               + f" · limits: {jobs.limits.per_session} jobs per user (a browser, or a signed-in address), "
                 f"{jobs.limits.total} in all")
    note = recovery_note(jobs.queue.storage)
    if note:
        st.warning(note)
    listed = jobs.jobs()
    if not listed:
        st.info("No jobs yet on this queue.")
        return
    me = ui.session_id()
    rows = [dict(j.summary(), mine=me in j.sessions) for j in listed]
    st.dataframe(pd.DataFrame(rows), hide_index=True, width="stretch")
    # only the jobs this user waits for (an admin: all); cancelling withdraws this user's request
    active = {j.id: j for j in listed if j.active and (me in j.sessions or is_admin(me))}
    if active:
        pick = st.selectbox("Cancel a job", list(active),
                            format_func=lambda i: f"{i} ({active[i].spec.analysis}, {active[i].state})")
        if st.button("Cancel job"):
            jobs.cancel(pick, session=me)


table()
