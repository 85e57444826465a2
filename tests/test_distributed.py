"""torchrun scale-out: two CPU ranks (gloo) give the same Result as one process."""
import os
import subprocess
import sys

import pandas as pd
import pytest

COMMON = ["--model", "demo_resnet", "--samples", "64", "--batch-size", "16", "--device", "cpu", "--no-cache"]


def run(tmp_path, name, args, ranks):
    out = tmp_path / f"{name}_{ranks}.csv"
    launcher = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(ranks),
                "--master-port", str(29500 + os.getpid() % 1000)] if ranks > 1 else [sys.executable]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run([*launcher, "-m", "vitlens", "run", *args, *COMMON, "--out", str(out)],
                          capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return pd.read_csv(out), proc.stderr


@pytest.mark.parametrize("name,args,rtol", [
    # minibatches are dealt out to ranks: each minibatch's numbers are computed exactly as alone
    ("spectrum", ["hessian", "--what", "spectrum", "--minibatch", "16", "--top-k", "3"], 1e-9),
    # data-set-level HVPs are summed across ranks: equal up to summation order (mixup drawn as alone)
    ("topk", ["hessian", "--what", "topk", "--top-k", "3", "--tol", "1e-6", "--mixup", "0.4"], 1e-4),
    # landscape grid points are dealt out to ranks
    ("landscape", ["landscape", "--grid", "5", "--range", "0.5"], 1e-9),
])
def test_two_ranks_match_one_process(tmp_path, name, args, rtol):
    one, _ = run(tmp_path, name, args, 1)
    two, err = run(tmp_path, name, args, 2)
    assert list(one.columns) == list(two.columns) and len(one) == len(two)
    value = "loss" if name == "landscape" else "eigenvalue"
    pd.testing.assert_series_equal(one[value], two[value], rtol=rtol, check_exact=False)
    if name == "landscape":
        assert one[["x", "y"]].equals(two[["x", "y"]])
    assert err.count("wrote") == 1  # rank 0 alone writes the Result


SESSION_SCRIPT = """
import sys, time
from pathlib import Path
import torch.distributed as dist
from vitlens import distributed
marker = Path(sys.argv[1])
with distributed.session() as joined:
    assert joined and dist.get_world_size() == 2
    if distributed.is_main():
        time.sleep(1.0)            # rank 0 is slow to write its Result ...
        marker.write_text("written")
# ... and no rank leaves the session before it has, and each leaves the process group
print(f"rank-left marker={marker.exists()} initialized={dist.is_initialized()}", flush=True)
"""


def test_session_ranks_leave_together_and_destroy_the_group(tmp_path):
    """A rank that exits while a peer still holds its gloo connection can abort (SIGABRT); `session`
    makes every rank wait for the others and leave the process group before it exits."""
    script = tmp_path / "session.py"
    script.write_text(SESSION_SCRIPT)
    marker = tmp_path / "marker"
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2",
                           "--master-port", str(30500 + os.getpid() % 1000), str(script), str(marker)],
                          capture_output=True, text=True, timeout=120, env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.count("rank-left marker=True initialized=False") == 2, proc.stdout
