"""Who is using the dashboard: the identity the job limits, the queue's round-robin, the Jobs page's
"mine" and the uploads count for (`session_id`), and the optional sign-in gate."""
from __future__ import annotations

import contextlib
import hashlib
import os
import uuid

import streamlit as st
from streamlit.runtime.scriptrunner import get_script_run_ctx

from .state import plain

XSRF_COOKIE = "_streamlit_xsrf"  # Streamlit's name for Tornado's XSRF cookie (server.enableXsrfProtection)


def xsrf_browser_token(cookie: str | None) -> str | None:
    """The per-browser secret inside Streamlit's XSRF cookie value, or None when there is none.

    The server sets the cookie once per browser and, on every page load, sets it again with the same
    token under a fresh mask. The format is Tornado's, which Streamlit's own server keeps: version 2
    is ``2|mask|masked_token|timestamp`` (hex; the token XOR the 4-byte mask repeated), version 1
    the bare hex token. Every tab of one browser therefore carries the same token, and another
    browser (or a private window) another one."""
    cookie = (cookie or "").strip("\"'")
    if not cookie or len(cookie) > 512:
        return None
    try:
        if cookie.startswith("2|"):
            _, mask_hex, masked_hex, _ = cookie.split("|", 3)
            mask, masked = bytes.fromhex(mask_hex), bytes.fromhex(masked_hex)
            if len(mask) != 4 or not masked:
                return None
            token = bytes(b ^ mask[i % 4] for i, b in enumerate(masked))
        else:
            token = bytes.fromhex(cookie)
    except ValueError:
        return None
    return token.hex() if token else None


def session_id() -> str:
    """Who the job limits (`VITLENS_MAX_JOBS_PER_SESSION`), the queue's round-robin, the Jobs page's
    "mine" and the uploads count for: with sign-in on, the signed-in address (all of one user's tabs
    together); else this browser (a hash of the token in Streamlit's XSRF cookie, `xsrf_browser_token`:
    all its tabs together); else, with XSRF protection off or outside a server run, this session
    (Streamlit's own id, or a uuid kept in the session state).

    Not a security boundary: a client that drops its cookies is a new browser, as a new private
    window is; `VITLENS_MAX_JOBS` still caps the whole server."""
    if allowed_emails() and st.user.get("is_logged_in", False) and st.user.get("email"):
        return f"user:{str(st.user.get('email')).strip().lower()}"
    if "vl_session_id" not in st.session_state:
        token = None
        with contextlib.suppress(Exception):  # no server context (AppTest, bare mode): no cookies
            token = xsrf_browser_token(st.context.cookies.get(XSRF_COOKIE))
        ctx = get_script_run_ctx(suppress_warning=True)
        st.session_state["vl_session_id"] = (
            f"browser:{hashlib.sha256(token.encode()).hexdigest()[:24]}" if token
            else ctx.session_id if ctx is not None else uuid.uuid4().hex)
    return st.session_state["vl_session_id"]


def allowed_emails() -> set[str]:
    """$VITLENS_ALLOWED_EMAILS: comma-separated addresses or @domain entries; unset/empty = sign-in off."""
    return {e.strip().lower() for e in os.environ.get("VITLENS_ALLOWED_EMAILS", "").split(",") if e.strip()}


def email_allowed(email: str | None, allowed: set[str]) -> bool:
    email = (email or "").strip().lower()
    return bool(email) and (email in allowed or any(a.startswith("@") and email.endswith(a) for a in allowed))


def require_sign_in() -> None:
    """Optional sign-in with Streamlit's OIDC (`st.login`; provider in .streamlit/secrets.toml [auth]).
    On when VITLENS_ALLOWED_EMAILS is set: only those addresses (or @domains) see the dashboard."""
    allowed = allowed_emails()
    if not allowed:
        if os.environ.get("VITLENS_ALLOWED_EMAILS", "").strip():  # set, but only separators: fail closed
            st.error("VITLENS_ALLOWED_EMAILS is set but holds no address or @domain; fix it to open the dashboard.")
            st.stop()
        return
    try:
        configured = "auth" in st.secrets
    except Exception:  # no secrets file at all
        configured = False
    if not configured:
        st.error("Sign-in is on (VITLENS_ALLOWED_EMAILS) but no [auth] provider is set in .streamlit/secrets.toml.")
        st.stop()
    if not st.user.get("is_logged_in", False):
        st.info("This vitlens server asks you to sign in.")
        st.button("Sign in", on_click=st.login, type="primary")
        st.stop()
    if st.user.get("email_verified") is False:  # the provider says the address is not the user's (yet)
        st.error(f"{plain(st.user.get('email'))} is not verified by the sign-in provider; verify it there first.")
        st.button("Sign out", on_click=st.logout)
        st.stop()
    if not email_allowed(st.user.get("email"), allowed):
        st.error(f"{plain(st.user.get('email'))} is not on this server's allow-list.")
        st.button("Sign out", on_click=st.logout)
        st.stop()
