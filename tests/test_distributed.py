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
