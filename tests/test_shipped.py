"""The Results shipped inside the package (vitlens.store.shipped, made by scripts/make_demo_results.py): every
page's default view of the demo models is there, draws on a fresh cache without queueing a job, matches
a recomputation, and is ignored (recomputed) when it was made by another vitlens version."""
import importlib.util
import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest

from vitlens.engine import JobSpec, cached_result, request_id, run
from vitlens.jobs import JobManager
from vitlens.store.shipped import MANIFEST, SHIPPED, manifest

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("make_demo_results", ROOT / "scripts" / "make_demo_results.py")
make_demo_results = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(make_demo_results)

PAGES = ["app.py", *sorted(str(p.relative_to(ROOT)) for p in (ROOT / "pages").glob("[0-8]_*.py"))]  # not Jobs


@pytest.fixture
def shipped_on(monkeypatch, tmp_path):
    """The package's shipped Results served, a fresh user cache, no workers."""
    monkeypatch.setenv("VITLENS_DEMO_RESULTS", str(SHIPPED))
    monkeypatch.setenv("VITLENS_EMBEDDED_WORKERS", "0")
    monkeypatch.setenv("VITLENS_CHECKPOINT_ROOT", str(tmp_path / "checkpoints"))
    monkeypatch.setenv("VITLENS_DATA_ROOT", str(tmp_path / "data"))
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "data").mkdir()


def _entry(analysis: str, model: str, split: str = "test", params: dict | None = None) -> JobSpec:
    for entry in manifest(SHIPPED)["requests"]:
        spec = JobSpec.from_dict(entry["spec"])
        if (spec.analysis, spec.model, spec.split) == (analysis, model, split) and (params is None or spec.params == params):
            return spec
    raise AssertionError(f"no shipped {analysis} on {model}")


def test_every_pages_default_for_the_demo_models_is_shipped_by_this_version():
    assert make_demo_results.check(SHIPPED) == 0  # request ids of today's page defaults, this version


@pytest.mark.parametrize("page", PAGES)
def test_every_page_draws_its_demo_default_on_a_fresh_cache_without_queueing_a_job(shipped_on, page):
    at = AppTest.from_file(str(ROOT / page), default_timeout=60)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]
    drawn = at.get("plotly_chart") or at.dataframe  # Findings: the verdict table
    assert drawn, f"{page}: nothing drawn from the shipped Results"
    assert JobManager(embedded_workers=0).jobs() == []  # nothing queued, nothing to wait for
    if page == "app.py":
        assert "Computing the scoreboard" not in " ".join(i.value for i in at.info)


def _numbers(frame: pd.DataFrame) -> pd.DataFrame:
    """The measured numbers (wall-clock seconds apart)."""
    numbers = frame.select_dtypes("number")
    return numbers[[c for c in numbers.columns if "second" not in c]]


@pytest.mark.parametrize("analysis,model,params", [
    ("evaluate", "demo_vit", {}),
    ("fourier", "demo_alternet", None),
    ("variance", "demo_resnet", {}),
    ("noise", "demo_vit", None),
    ("hessian", "demo_resnet", None),  # the spectrum: 8 minibatches' top-5 (about 12 s)
])
def test_shipped_results_match_a_recomputation(shipped_on, monkeypatch, analysis, model, params):
    """A sample of the shipped Results (the cheap ones, and the Hessian spectrum) against a fresh
    computation, within the tolerance of the README findings test (2%: BLAS summation order differs
    between CPUs)."""
    spec = _entry(analysis, model, params=params)
    shipped = cached_result(spec)
    assert shipped is not None and shipped.meta["shipped"]
    monkeypatch.setenv("VITLENS_DEMO_RESULTS", "off")
    fresh, from_cache = run(spec)
    assert not from_cache
    a, b = _numbers(shipped.frame), _numbers(fresh.frame)
    assert list(a.columns) == list(b.columns) and len(a) == len(b)
    np.testing.assert_allclose(a.to_numpy(float), b.to_numpy(float), rtol=0.02, atol=1e-6 * max(1.0, np.nanmax(np.abs(b.to_numpy(float)))))
    for name, value in fresh.meta.get("summary", {}).items():
        if isinstance(value, float) and "second" not in name:
            assert shipped.meta["summary"][name] == pytest.approx(value, rel=0.02, abs=1e-6), name


def test_results_made_by_another_version_are_ignored_and_recomputed(shipped_on, tmp_path, monkeypatch):
    spec = _entry("variance", "demo_vit", params={})
    same = tmp_path / "same"
    shutil.copytree(SHIPPED, same)
    monkeypatch.setenv("VITLENS_DEMO_RESULTS", str(same))
    assert cached_result(spec) is not None
    other = tmp_path / "other"
    shutil.copytree(SHIPPED, other)
    made = json.loads((other / MANIFEST).read_text())
    made["vitlens"] = "0.0.1"
    (other / MANIFEST).write_text(json.dumps(made))
    monkeypatch.setenv("VITLENS_DEMO_RESULTS", str(other))
    assert cached_result(spec) is None
    result, from_cache = run(spec)
    assert not from_cache and "shipped" not in result.meta
    assert request_id(spec) in {e["request"] for e in made["requests"]}  # it was shipped, just not for us
