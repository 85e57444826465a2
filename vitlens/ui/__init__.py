"""Streamlit pieces every dashboard page shares. Pages hold no torch code: a standard analysis page
is `ui.analysis_page(NAME)` (options, then the figures the analysis declares); a custom one calls
`page()`, `sidebar(analysis)`, `options(spec)`, `control()` for view-only settings, then
`show(spec, draw)`.

    state.py     URL state: values kept in the URL, the session and the widgets
    sidebar.py   the shared selection (the request's fields) and the analysis options' widgets
    uploads.py   checkpoint uploads (private per session, quota, expiry)
    identity.py  who is using the dashboard (browser or signed-in user) and the sign-in gate
    jobview.py   a request's Result or its job (submit, progress, cancel), page header, standard page
    exports.py   the HTML report download and W&B export
"""
from .identity import allowed_emails, email_allowed, require_sign_in, session_id, xsrf_browser_token
from .jobview import (analysis_header, analysis_page, autorun_default, convention_caption, download, draw_figures, page,
                      request_of, result_or_job, show, submit, summary_caption)
from .exports import report_buttons
from .sidebar import options, sidebar, spec_label
from .state import control, plain, value, widget
from .uploads import save_upload, upload_folder

__all__ = ["allowed_emails", "analysis_header", "analysis_page", "autorun_default", "control", "convention_caption", "download",
           "draw_figures", "email_allowed", "options", "page", "plain", "report_buttons", "request_of", "require_sign_in", "result_or_job",
           "save_upload", "session_id", "show", "sidebar", "spec_label", "submit", "summary_caption", "upload_folder", "value",
           "widget", "xsrf_browser_token"]
