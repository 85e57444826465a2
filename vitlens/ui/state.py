"""Dashboard state, kept in step on every run in three places:

  * the URL (`st.query_params`): every choice and every analysis parameter, so a copied link opens
    the same view for a teammate, also on a freshly started server;
  * `st.session_state`: survives page switches (Streamlit forgets widget state of widgets a page
    does not draw, and drops the query string on navigation); shared selections under
    "vl_<name>", a page's own values under "vl_<scope>.<name>" (scope: the page's analysis);
  * the widget itself (key `w_<name>` / `w_<scope>.<name>`), whose change callback writes the
    session value.

All state is per browser session (st.session_state), never module-level: the server runs every
session's script in its own thread. A page's own values are trusted from the URL only when the URL
was made on that page (a deep link), so weight_decay set on one page never reaches another's request.
"""
from __future__ import annotations

from typing import Any, Callable

import streamlit as st

from ..declarations import list_analyses
from ..errors import VitlensError
from ..request import REQUEST_FIELDS

# the shared selection in the URL: the request's fields, and the folder of a `folder:` data set
SHARED_FIELDS = [*REQUEST_FIELDS[:4], "folder", *REQUEST_FIELDS[4:]]

PAGE_KEY = "vl__page"          # the page this session ran last
TRUSTED_KEY = "vl__url_page"   # the page the URL's own values belong to (a deep link's page)
NAMES_KEY = "vl__names"        # the page values drawn in this run (they go to the URL)
LINK_ERRORS_KEY = "vl__link_errors"  # the link's values the declarations refused (shown once)


def _scope() -> str:
    return st.session_state.get(PAGE_KEY, "")


def store_key(name: str, scoped: bool) -> str:
    """The session-state key that holds NAME's value (SCOPED: this page's own value)."""
    return f"vl_{_scope()}.{name}" if scoped else f"vl_{name}"


def _cast(value: Any, default: Any) -> Any:
    if isinstance(default, bool):
        return str(value).lower() in ("1", "true", "yes", "on")
    if isinstance(default, int):
        return int(float(value))
    if isinstance(default, float):
        return float(value)
    return str(value)


def value(name: str, default: Any, scoped: bool = False, parse: Callable[[Any], Any] | None = None) -> Any:
    """The current value of NAME: session, else URL (a page's own values only when the URL was
    made on this page), else DEFAULT."""
    store = store_key(name, scoped)
    if store not in st.session_state:
        raw = st.query_params.get(name)
        if scoped and st.session_state.get(TRUSTED_KEY) != _scope():
            raw = None  # left over from another page: not this page's value
        try:
            st.session_state[store] = default if raw is None else (parse or (lambda v: _cast(v, default)))(raw)
        except VitlensError as err:  # refused by the declaration: the CLI's line, shown once
            st.session_state[store] = default
            st.session_state.setdefault(LINK_ERRORS_KEY, []).append(f"{str(err).splitlines()[0]}; using the default")
        except (TypeError, ValueError, OverflowError):
            st.session_state[store] = default
    return st.session_state[store]


def plain(text: str) -> str:
    """TEXT with Markdown's special characters escaped: a user's value shows as typed, never as a
    link, an image or HTML."""
    return "".join("\\" + c if c in "\\`*_{}[]()<>#+-.!|~$" else c for c in str(text))


def show_link_errors() -> None:
    """One warning line per link value the declarations refused (then forgotten)."""
    for line in st.session_state.pop(LINK_ERRORS_KEY, []):
        st.sidebar.warning(f"Link: {plain(line)}")


def _set(store: str, key: str) -> None:
    st.session_state[store] = st.session_state[key]


def widget(name: str, default: Any, render: Callable, label: str, scoped: bool = False,
           parse: Callable[[Any], Any] | None = None, **kwargs) -> Any:
    """Draw a widget whose value is stored under NAME (session + URL)."""
    current = value(name, default, scoped, parse)
    store = store_key(name, scoped)
    key = f"w_{_scope()}.{name}" if scoped else f"w_{name}"
    if "options" in kwargs and current not in kwargs["options"]:
        current = default if default in kwargs["options"] else kwargs["options"][0]
        st.session_state[store] = current
    low, high = kwargs.get("min_value"), kwargs.get("max_value")
    if isinstance(current, (int, float)) and not isinstance(current, bool) and (
            current != current or (low is not None and current < low) or (high is not None and current > high)):
        current = default  # a link's out-of-range number (samples=1e9, seed=-5): the default, not a crash
        st.session_state[store] = current
    if key not in st.session_state or st.session_state[key] != current:
        st.session_state[key] = current
    render(label, key=key, on_change=_set, args=(store, key), **kwargs)
    if scoped:
        st.session_state.setdefault(NAMES_KEY, [])
        if name not in st.session_state[NAMES_KEY]:
            st.session_state[NAMES_KEY].append(name)
    return st.session_state[store]


def sync_url(clean: bool = True) -> None:
    """The URL holds the shared selection and this page's values, and (CLEAN, once the page's own
    values are drawn) nothing of other pages."""
    want = {n: str(st.session_state[f"vl_{n}"]) for n in SHARED_FIELDS if f"vl_{n}" in st.session_state}
    for n in st.session_state.get(NAMES_KEY, []):
        v = st.session_state.get(store_key(n, True))
        want[n] = "none" if v is None else str(v).lower() if isinstance(v, bool) else str(v)
    stale = [k for k in st.query_params if k not in want and k in _page_value_names()] if clean else []
    for k in stale:
        del st.query_params[k]
    if {k: st.query_params.get(k) for k in want} != want:
        st.query_params.update(want)
    if clean:
        st.session_state[TRUSTED_KEY] = _scope()  # from now on the URL speaks for this page


def _page_value_names() -> set[str]:
    names = {o.name for a in list_analyses() for o in a.options}
    return names | set(PAGE_CONTROLS)


PAGE_CONTROLS = ("plot", "value", "log_scale", "compare", "view", "paper")  # view controls pages draw themselves


def control(name: str, default: Any, render: Callable | None = None, label: str | None = None, **kwargs) -> Any:
    """A page's own view control (not an analysis option), drawn in the sidebar and kept in the URL."""
    if render is None:
        render = st.sidebar.checkbox if isinstance(default, bool) else st.sidebar.text_input
    out = widget(name, default, render, label or name.replace("_", " "), scoped=True, **kwargs)
    sync_url()
    return out
