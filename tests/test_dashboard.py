"""Every dashboard page under Streamlit's AppTest: renders, draws the Result, restores deep links,
shows bad input as an error and keeps working. The engine is real (jobs run in the worker thread)."""
import base64
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from streamlit.testing.v1 import AppTest

from vitlens.store import ResultCache
from vitlens.engine import JobSpec, cached_result, request_id
from vitlens.models import load_model
from vitlens.result import Result

ROOT = Path(__file__).resolve().parents[1]
PAGES = {
    "app.py": ("evaluate", 1),
    "pages/1_Hessian.py": ("hessian", 1),
    "pages/2_Loss_landscape.py": ("landscape", 1),
    "pages/3_Fourier.py": ("fourier", 2),
    "pages/4_Feature_variance.py": ("variance", 1),
    "pages/5_Lesion.py": ("lesion", 1),
    "pages/6_Noise_robustness.py": ("noise", 1),
    "pages/7_Similarity.py": ("cka", 1),
    "pages/8_Compare.py": ("variance", 1),
}
FAST = {"samples": "48", "batch_size": "16"}


@pytest.fixture(autouse=True)
def _roots(tmp_path, monkeypatch):
    monkeypatch.setenv("VITLENS_CHECKPOINT_ROOT", str(tmp_path / "checkpoints"))
    monkeypatch.setenv("VITLENS_DATA_ROOT", str(tmp_path / "data"))
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "data").mkdir()


def open_page(page, query=None, wait_for_chart=True, timeout=120):
    at = AppTest.from_file(str(ROOT / page), default_timeout=60)
    for key, value in {**FAST, **(query or {})}.items():
        at.query_params[key] = value
    at.run()
    end = time.time() + timeout
    while wait_for_chart and not at.exception and not at.error and not at.get("plotly_chart"):
        if time.time() > end:
            raise AssertionError(f"{page}: no chart after {timeout}s")
        time.sleep(0.3)
        at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def _decode(value):
    """Plotly ships numeric arrays as {"dtype", "bdata"} (base64); turn them back into lists."""
    if isinstance(value, dict) and "bdata" in value:
        return np.frombuffer(base64.b64decode(value["bdata"]), dtype=value["dtype"]).tolist()
    return value


def chart_data(at, index=0):
    traces = json.loads(at.get("plotly_chart")[index].proto.spec)["data"]
    return [{k: _decode(v) for k, v in trace.items()} for trace in traces]


def spec_for(analysis, **kw):
    base = dict(analysis=analysis, model="demo_resnet", model_args={}, checkpoint=None, dataset="digits",
                split="test", samples=48, seed=0, batch_size=16, device="auto", params={})
    base.update(kw)
    return JobSpec(**base)


@pytest.mark.parametrize("page", list(PAGES), ids=[Path(p).stem for p in PAGES])
def test_page_renders_default_and_draws_result(page):
    analysis, charts = PAGES[page]
    at = open_page(page)
    assert not at.error, [e.value for e in at.error]
    assert len(at.get("plotly_chart")) >= charts
    assert any(b.label == "Download CSV" for b in at.get("download_button"))


def test_variance_chart_holds_the_result():
    at = open_page("pages/4_Feature_variance.py")
    trace = chart_data(at)[0]
    params = {}
    result = cached_result(spec_for("variance", params=params))
    assert result is not None  # the page's job filled the cache
    frame = result.frame.sort_values("block")
    assert trace["y"] == pytest.approx(frame["variance"].tolist())
    assert trace["x"] == pytest.approx(frame["depth"].tolist())


def test_landscape_page_draws_a_1d_path_as_a_curve():
    """A Result of directions path (meta dims 1) is a line along x, not a surface."""
    params = {"convention": "paper", "directions": "path", "grid": 5, "range": 1.0, "weight_decay": 0.05}
    xs = np.linspace(0.0, 1.0, 5)
    frame = pd.DataFrame({"i": range(5), "j": 0, "x": xs, "y": 0.0, "loss": 1.0 + xs ** 2, "nll": 1.0 + xs ** 2,
                          "l2": 0.0, "accuracy": 0.5, "samples": 48, "stderr": 0.0, "finite": True})
    with ResultCache() as cache:  # the page finds it as if computed before (no endpoint needed)
        cache.put("path-result", Result(frame, {"analysis": "landscape", "dims": 1, "summary": {}}))
        cache.set_alias(request_id(spec_for("landscape", params=params)), "path-result")
    at = open_page("pages/2_Loss_landscape.py", {"directions": "path", "grid": "5"})
    assert not at.error, [e.value for e in at.error]
    (trace,) = chart_data(at)
    assert trace["type"] == "scatter"
    assert trace["x"] == pytest.approx(xs.tolist()) and trace["y"] == pytest.approx((1.0 + xs ** 2).tolist())


def test_hessian_trace_view_compares_estimators():
    """what=trace from the URL: the table holds Hutchinson and the Krylov-deflated estimate of the
    same trace, the deflated one with the smaller standard error (outliers taken out exactly)."""
    at = open_page("pages/1_Hessian.py", {"what": "trace", "estimator": "both", "probes": "30"}, timeout=300)
    assert not at.error, [e.value for e in at.error]
    frame = at.dataframe[0].value.set_index("estimator")
    assert set(frame.index) == {"hutchinson", "krylov"}
    hutch, krylov = frame.loc["hutchinson"], frame.loc["krylov"]
    assert krylov["stderr"] < hutch["stderr"] / 2
    assert abs(krylov["estimate"] - hutch["estimate"]) <= 3 * (hutch["stderr"] + krylov["stderr"])


def test_deep_link_restores_selection():
    query = {"model_choice": "demo_alternet", "model": "demo_alternet", "seed": "3", "split": "train",
             "frequencies": "5", "eps": "0.2"}
    at = open_page("pages/6_Noise_robustness.py", query)
    assert at.sidebar.selectbox(key="w_model_choice").value == "demo_alternet"
    assert at.sidebar.number_input(key="w_seed").value == 3
    assert at.sidebar.selectbox(key="w_split").value == "train"
    assert at.sidebar.number_input(key="w_noise.frequencies").value == 5
    trace = chart_data(at)[0]
    assert len(trace["x"]) == 5  # five noise frequencies as the link asked
    assert at.query_params["model"] == ["demo_alternet"] or at.query_params["model"] == "demo_alternet"


def wait_for(at, condition, timeout=60):
    end = time.time() + timeout
    while not condition(at) and time.time() < end:
        time.sleep(0.3)
        at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def test_unknown_timm_model_shows_error_then_recovers():
    at = open_page("pages/4_Feature_variance.py", {"model": "timm:no_such_net_xyz"}, wait_for_chart=False)
    assert at.sidebar.text_input(key="w_timm_name").value == "no_such_net_xyz"
    wait_for(at, lambda a: a.error)  # sized before any job: the page says so at once, no Run needed
    assert any("unknown timm model" in e.value for e in at.error), [e.value for e in at.error]
    at.sidebar.selectbox(key="w_model_choice").set_value("demo_resnet").run()
    wait_for(at, lambda a: a.get("plotly_chart"))
    assert at.get("plotly_chart") and not at.error


def test_bad_checkpoint_shows_error(tmp_path):
    root = tmp_path / "checkpoints"
    (root / "broken.pt").write_bytes(b"\x00 not weights")
    torch.save(load_model("demo_resnet", num_classes=3).state_dict(), root / "three_classes.pt")
    for name, needle in (("broken.pt", "cannot read checkpoint"), ("three_classes.pt", "shape mismatch")):
        at = open_page("pages/4_Feature_variance.py", {"checkpoint": name}, timeout=60)
        assert any(needle in e.value for e in at.error), [e.value for e in at.error]


def test_missing_data_folder_and_traversal_refused():
    at = open_page("pages/4_Feature_variance.py", {"dataset": "folder", "folder": "no/such/folder"}, timeout=60)
    assert any("not found" in e.value or "does not exist" in e.value for e in at.error), [e.value for e in at.error]
    at = open_page("pages/4_Feature_variance.py", {"checkpoint": "../../etc/passwd"}, timeout=30,
                   wait_for_chart=False)
    assert any("inside" in e.value or "outside" in e.value for e in at.error), [e.value for e in at.error]


def test_jobs_page_lists_jobs():
    open_page("pages/4_Feature_variance.py")
    at = AppTest.from_file(str(ROOT / "pages/9_Jobs.py"), default_timeout=60)
    at.run()
    assert not at.exception
    table = at.dataframe[0].value
    assert "variance" in set(table["analysis"])


def test_sign_in_gate(monkeypatch):
    from vitlens.ui import email_allowed
    allowed = {"ana@lab.org", "@team.org"}
    assert email_allowed("Ana@Lab.org", allowed) and email_allowed("bo@team.org", allowed)
    assert not email_allowed("eve@evil.org", allowed) and not email_allowed("", allowed)
    assert not email_allowed("x@notteam.org.evil", allowed)
    monkeypatch.setenv("VITLENS_ALLOWED_EMAILS", "ana@lab.org")
    at = AppTest.from_file(str(ROOT / "pages/4_Feature_variance.py"), default_timeout=60)
    at.run()
    assert not at.exception and not at.get("plotly_chart")  # gate closed: nothing of the dashboard shows
    assert any("no [auth] provider" in e.value for e in at.error)
    at.secrets["auth"] = {"redirect_uri": "http://localhost:8501/oauth2callback", "cookie_secret": "x" * 32,
                          "client_id": "id", "client_secret": "secret",
                          "server_metadata_url": "https://idp.example/.well-known/openid-configuration"}
    at.run()
    assert not at.exception and not at.get("plotly_chart")
    assert any(b.label == "Sign in" for b in at.button)  # configured, not signed in yet


def test_xsrf_browser_token_reads_the_token_streamlits_server_writes():
    """The cookie's token as Streamlit's own server encodes and decodes it (its XSRF helpers are the
    reference): the same token under two masks gives one id, another token another; junk gives None."""
    helpers = pytest.importorskip("streamlit.web.server.starlette.starlette_app_utils")
    from vitlens.ui import xsrf_browser_token
    token = bytes(range(1, 17))
    first, second = (helpers.generate_xsrf_token_string(token, 1796228942) for _ in range(2))
    assert first != second  # fresh masks
    assert xsrf_browser_token(first) == xsrf_browser_token(second) == helpers.decode_xsrf_token_string(first)[0].hex()
    assert xsrf_browser_token(f'"{first}"') == token.hex()
    assert xsrf_browser_token(helpers.generate_xsrf_token_string(bytes(16), 1)) != token.hex()
    assert xsrf_browser_token(token.hex()) == token.hex()  # version 1: the bare token
    for junk in (None, "", "2|zz|00|1", "2|0102|abcd|1", "2|01020304", "not hex", "0" * 600):
        assert xsrf_browser_token(junk) is None, junk


def test_signed_in_tabs_count_as_one_user(monkeypatch):
    """With sign-in on, limits and uploads follow the signed-in address, not the browser tab."""
    seen = []
    for _ in range(2):  # two tabs of the same user
        monkeypatch.setenv("VITLENS_ALLOWED_EMAILS", "@lab.org")
        at = AppTest.from_string(
            "import streamlit as st\nfrom vitlens.ui import session_id\nst.text(session_id())", default_timeout=60)
        at.user = {"is_logged_in": True, "email": "Ana@Lab.org"}
        at.run()
        assert not at.exception, [e.value for e in at.exception]
        seen.append(at.text[0].value)
    assert seen == ["user:ana@lab.org", "user:ana@lab.org"]
    monkeypatch.delenv("VITLENS_ALLOWED_EMAILS")
    at = AppTest.from_string("import streamlit as st\nfrom vitlens.ui import session_id\nst.text(session_id())")
    at.user = {"is_logged_in": True, "email": "ana@lab.org"}  # sign-in off: the tab is the session
    at.run()
    assert not at.text[0].value.startswith("user:")
