"""benchmarks/gpu_check.sh in its CPU --quick mode, so the one prepared GPU check cannot rot before a GPU
machine is lent: the report is written, has every section, every section finished, and its numbers are finite."""
import math
import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

SECTIONS = ["environment", "tests (VITLENS_TEST_DEVICE=cuda)", "one HVP vs one gradient", "top-2 vs PyHessian",
            "max-eigenvalue spectrum", "landscape grid point", "Fourier + variance pass", "projected paper spectrum"]


def test_gpu_check_quick_on_cpu(tmp_path):
    env = dict(os.environ, OUT=str(tmp_path / "out"), OMP_NUM_THREADS="1", CHECK_TIMEOUT="170")
    proc = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu_check.sh"), "--quick", "--device", "cpu",
                           "--threads", "1", "--budget", "150"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=200)
    report = tmp_path / "out" / "report.md"
    assert report.exists(), proc.stdout + proc.stderr
    text = report.read_text()
    assert proc.returncode == 0, text[-3000:]
    assert "set-up:" in (tmp_path / "out" / "setup.log").read_text()
    for model in ("demo_vit", "demo_resnet"):
        for title in SECTIONS[2:7]:
            assert f"## {model}: {title}" in text
    assert "## environment" in text and "## projected paper spectrum" in text
    assert text.count("`points_per_pass` = 0 (auto) chooses **") == 2  # one per model
    statuses = re.findall(r"^\| (.+?) \| (ok|failed.*?|timed out.*?) \| [\d.]+ \|$", text, re.M)
    assert len(statuses) >= 2 + 2 * 6 + 1 and all(state == "ok" for _, state in statuses), statuses
    # the measured tables: every cell that is a number is finite, and the key figures are there
    assert not re.search(r"\b(nan|inf)\b", text, re.I), re.search(r".*\b(nan|inf)\b.*", text, re.I).group(0)
    for pattern in (r"\| HVP double_backward \| ([\d.e+-]+) \| ([\d.e+-]+) \|",
                    r"\| vitlens Lanczos, residual stop \(default\) \| ([\d.e+-]+) \|",
                    r"\| vitlens Lanczos, gap-aware stop \| ([\d.e+-]+) \|",
                    r"\| PointEvaluator.evaluate_many, 2 points per pass .*? \| ([\d.e+-]+) \| ([\d.e+-]+) \|",
                    r"\| PyHessian eigenvalues\(top_n=2\), maxIter=10 \| ([\d.e+-]+) \|",
                    r"\| 2 \| 2 \| ([\d.e+-]+) \| ([\d.e+-]+) \|",  # spectrum, together = 2
                    r"\| vitlens PointEvaluator.evaluate \| ([\d.e+-]+) \| ([\d.e+-]+) \|",
                    r"\| Fourier \+ variance collect \| ([\d.e+-]+) \| ([\d.e+-]+) \|",
                    r"\| demo_vit \| ([\d.]+) min \| ([\d.]+) min \|"):
        found = re.findall(pattern, text)
        assert found, pattern
        assert all(math.isfinite(float(v)) and float(v) >= 0 for row in found
                   for v in (row if isinstance(row, tuple) else (row,))), (pattern, found)


def test_gpu_check_sections_survive_a_failure(tmp_path, monkeypatch):
    """One section raising or running past its cap is written into the report; the next still runs."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import time

    import gpu_check
    report = gpu_check.Report(tmp_path / "report.md", "t")
    deadline = time.perf_counter() + 30
    with gpu_check.section(report, "boom", 5, deadline) as lines:
        lines.append("before")
        raise RuntimeError("broken")
    with gpu_check.section(report, "slow", 0.2, deadline) as lines:
        lines.append("partial")
        time.sleep(2)
    with gpu_check.section(report, "fine", 5, deadline) as lines:
        lines.append("done")
    text = report.path.read_text()
    assert "before" in text and "failed: RuntimeError: broken" in text
    assert "partial" in text and "timed out" in text
    assert "| fine | ok |" in text
