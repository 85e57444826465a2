"""Hostile or careless links: every one shows at most a one-line error and the page keeps working."""
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _roots(tmp_path, monkeypatch):
    monkeypatch.setenv("VITLENS_CHECKPOINT_ROOT", str(tmp_path / "checkpoints"))
    monkeypatch.setenv("VITLENS_DATA_ROOT", str(tmp_path / "data"))
    (tmp_path / "checkpoints").mkdir()


def _open(query, page="pages/4_Feature_variance.py"):
    at = AppTest.from_file(str(ROOT / page), default_timeout=60)
    for key, value in query.items():
        at.query_params[key] = value
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


@pytest.mark.parametrize("query", [
    {"samples": "inf"}, {"seed": "1e400"}, {"samples": "1e9"}, {"seed": "-5"}, {"batch_size": "nan"},
    {"model_args": "[" * 3000 + "]" * 3000}, {"grid": "1e400", "range": "nan"},
], ids=["samples-inf", "seed-1e400", "samples-huge", "seed-negative", "batch-nan", "nested-args", "grid-inf"])
def test_bad_url_values_never_raise(query):
    page = "pages/2_Loss_landscape.py" if "grid" in query else "pages/4_Feature_variance.py"
    _open({"model": "timm:no_such_model_for_tests", **query}, page)


def test_link_cannot_load_a_file_through_model_args(tmp_path):
    secret = tmp_path / "secret.pt"
    secret.write_bytes(b"weights somewhere on the server")
    at = _open({"model": "timm:resnet18", "model_args": f'{{"num_classes": 10, "checkpoint_path": "{secret}"}}'})
    errors = [e.value for e in at.error]
    assert any("not an architecture argument" in e for e in errors), errors
    assert not at.get("plotly_chart")


def test_sign_in_with_only_separators_fails_closed(monkeypatch):
    monkeypatch.setenv("VITLENS_ALLOWED_EMAILS", " , ")
    at = _open({})
    assert any("holds no address" in e.value for e in at.error)
    assert not at.get("plotly_chart")


class _Upload:
    def __init__(self, name, data):
        self.name, self._data, self.size = name, data, len(data)

    def getvalue(self):
        return self._data


def test_uploads_are_per_session_checked_and_bounded(tmp_path, monkeypatch):
    import io

    import streamlit as st
    import torch

    from vitlens import ui
    from vitlens.errors import VitlensError
    from vitlens.models import load_model
    buffer = io.BytesIO()
    torch.save(load_model("demo_resnet").state_dict(), buffer)
    st.session_state["vl_session_id"] = "session-a"
    kept = ui.save_upload(_Upload("w.pt", buffer.getvalue()))
    assert kept.startswith(ui.upload_folder() + "/") and (tmp_path / "checkpoints" / kept).is_file()
    with pytest.raises(VitlensError, match="cannot read checkpoint"):
        ui.save_upload(_Upload("junk.pt", b"\x00 not weights"))
    assert len(list((tmp_path / "checkpoints" / ui.upload_folder()).iterdir())) == 1  # the refused file is gone
    monkeypatch.setattr(ui.uploads, "UPLOAD_QUOTA", "1k")
    with pytest.raises(VitlensError, match="quota"):
        ui.save_upload(_Upload("w2.pt", buffer.getvalue() + b"x"))
    st.session_state["vl_session_id"] = "session-b"
    assert ui.upload_folder() not in kept  # another session, another folder
    at = _open({"checkpoint": kept})  # a link to session A's upload, opened by a new session
    assert any("another session's upload" in e.value for e in at.error), [e.value for e in at.error]


@pytest.mark.parametrize("name", ["VITLENS_INTERACTIVE_WORKERS", "VITLENS_MAX_JOBS", "VITLENS_QUEUE"])
def test_a_misconfigured_queue_is_one_line_not_a_traceback(name, monkeypatch):
    monkeypatch.setenv(name, "not a number" if name != "VITLENS_QUEUE" else "ftp://elsewhere")
    at = _open({}, page="pages/8_Compare.py")
    assert len(at.error) == 1, [e.value for e in at.error]
    shown = at.error[0].value.replace("\\", "")  # the line is escaped as Markdown; shown as typed
    assert name in shown and "misconfigured" in shown
    assert not at.get("plotly_chart")


def test_a_corrupt_queue_database_is_moved_aside_with_one_line(tmp_path, monkeypatch):
    """A truncated or overwritten jobs.db: the worker and the pages start a fresh queue with one line
    (the worker's log, the Jobs page) instead of an exception."""
    import subprocess
    import sys
    cache = tmp_path / "cache"
    monkeypatch.setenv("VITLENS_CACHE_DIR", str(cache))
    (cache / "queue").mkdir(parents=True, mode=0o700)
    cache.chmod(0o700)
    (cache / "queue" / "jobs.db").write_bytes(b"not a database " * 300)
    out = subprocess.run([sys.executable, "-m", "vitlens", "worker", "--once"], capture_output=True, text=True,
                         timeout=120, cwd=ROOT, env=dict(__import__("os").environ, VITLENS_CACHE_DIR=str(cache)))
    assert out.returncode == 0 and "was corrupt (file is not a database)" in out.stderr, out.stderr
    assert len(list((cache / "queue").glob("jobs.db.corrupt-*"))) == 1
    (cache / "queue" / "jobs.db").write_bytes(b"garbage again " * 300)  # and once more, under the dashboard
    at = _open({}, page="pages/9_Jobs.py")
    assert not at.exception, [e.value for e in at.exception]
    assert any("was corrupt" in w.value for w in at.warning), [w.value for w in at.warning]


LINKS = [  # (page, query, what the one line says) from the hostile sweep (#25)
    ("pages/6_Noise_robustness.py", {"frequencies": "[0.25,0.5]"}, None),  # a list: drawn, no TypeError
    ("pages/6_Noise_robustness.py", {"frequencies": "[" + ",".join(["0.5"] * 5000) + "]"}, "at most 256"),
    ("pages/4_Feature_variance.py", {"model_args": '{"[Session expired: sign in again](https://evil.example/login)":1}'},
     "is not an architecture argument"),
    ("pages/4_Feature_variance.py", {"model": "timm:![x](http://127.0.0.1:9/landing.png)"}, "is not a valid value"),
    ("pages/4_Feature_variance.py", {"model": "<script>alert(1)</script>"}, "is not a valid value"),
    ("pages/4_Feature_variance.py", {"model_args": '{"depth": 1000000}', "model": "demo_vit"}, "VITLENS_MAX_DEPTH"),
    ("pages/4_Feature_variance.py", {"seed": "-5"}, "at least 0"),
]


@pytest.mark.parametrize("page,query,says", LINKS, ids=[f"{i}" for i in range(len(LINKS))])
def test_hostile_links_are_one_escaped_line(page, query, says):
    at = _open(query, page=page)
    assert not at.exception, [e.value for e in at.exception]
    lines = [e.value for e in at.error] + [w.value for w in at.sidebar.warning]
    if says is None:
        assert not at.error, lines
        return
    shown = [line.replace("\\", "") for line in lines]
    assert any(says in line for line in shown), lines
    import re
    for line in lines:  # a user's value never renders as a link, an image or HTML: every mark is escaped
        assert not re.search(r"(?<!\\)\]\(", line) and not re.search(r"(?<!\\)<script", line), line
