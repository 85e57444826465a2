"""Tests for the landscape analysis (vitlens.analyses.landscape): resuming from the cache, the CLI."""
import math
import os
import subprocess
import sys

import pandas as pd
import pytest

from vitlens.engine import JobSpec, run


def test_analysis_resumes_from_the_cache():
    spec = JobSpec(analysis="landscape", model="demo_resnet", samples=16, batch_size=16,
                   params={"grid": 3, "range": 0.5})
    calls = []

    def interrupt(done, total, message):
        calls.append(done)
        if len(calls) == 4:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run(spec, progress=interrupt)
    resumed, cached = run(spec)
    assert not cached and resumed.meta["evaluation"]["resumed_points"] == 4
    fresh, _ = run(JobSpec(**{**spec.to_dict(), "params": {**spec.params, "resume": False}}), use_cache=False)
    pd.testing.assert_frame_equal(resumed.frame, fresh.frame)
    assert set(resumed.frame.columns) >= {"x", "y", "loss", "nll", "l2", "accuracy", "samples", "stderr", "finite"}
    assert math.isfinite(resumed.meta["summary"]["curvature_x"])


def test_cli_run_landscape(tmp_path):
    out = tmp_path / "s.csv"
    env = dict(os.environ, VITLENS_CACHE_DIR=str(tmp_path / "cache"))
    proc = subprocess.run([sys.executable, "-m", "vitlens", "run", "landscape", "--model", "demo_resnet",
                           "--samples", "16", "--batch-size", "16", "--grid", "3", "--range", "0.5",
                           "--out", str(out)], capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr
    frame = pd.read_csv(out)
    assert len(frame) == 9 and frame.finite.all()
    proc = subprocess.run([sys.executable, "-m", "vitlens", "run", "landscape", "--model", "demo_resnet",
                           "--samples", "16", "--range", "0"], capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 2 and "range" in proc.stderr and "Traceback" not in proc.stderr
