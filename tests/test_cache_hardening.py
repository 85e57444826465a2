"""The cache survives what a careless or hostile user can do to it: a corrupt database, a folder
owned by someone else, a forged entry, a result larger than the cache."""
import hashlib
import os
import subprocess
import sys

import pandas as pd
import pytest

from vitlens.store import ResultCache
from vitlens.errors import VitlensError
from vitlens.result import Result


def _result(rows=3):
    return Result(pd.DataFrame({"x": range(rows)}), {"analysis": "test"})


def test_corrupt_database_is_moved_aside_and_a_fresh_cache_starts(tmp_path, caplog):
    folder = tmp_path / "c"
    with ResultCache(folder) as cache:
        cache.put("k", _result())
    (folder / "cache.db").write_bytes(b"this is not an sqlite database" * 100)
    with ResultCache(folder) as cache:  # before the fix: sqlite3.DatabaseError
        assert cache.get("k") is None
        cache.put("k2", _result())
        assert cache.get("k2") is not None
    assert any(p.name.startswith("cache.db.corrupt-") for p in folder.iterdir())
    assert "corrupt" in caplog.text
    env = dict(os.environ, VITLENS_CACHE_DIR=str(folder))
    (folder / "cache.db").write_bytes(b"garbage" * 100)
    for args in (["cache", "clear"], ["cache", "ls"]):
        proc = subprocess.run([sys.executable, "-m", "vitlens", *args], capture_output=True, text=True, env=env)
        assert proc.returncode == 0, proc.stderr


def test_forged_entry_without_the_secret_is_refused(tmp_path):
    folder = tmp_path / "c"
    with ResultCache(folder) as cache:
        cache.put("k", _result())
        blob = cache._cache.get("result:k")
        payload = _result(5).to_bytes()
        forged = blob[:4] + hashlib.sha256(payload).digest() + payload  # a valid checksum, but not keyed
        cache._cache.set("result:k", forged)
        assert cache.get("k") is None  # refused (and dropped), not served


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to hand the folder to another user")
def test_folder_owned_by_another_user_is_refused_even_for_root(tmp_path):
    folder = tmp_path / "other"
    folder.mkdir(mode=0o700)
    os.chown(folder, 12345, 12345)
    with pytest.raises(VitlensError, match="belongs to another user"):
        ResultCache(folder)


def test_result_larger_than_the_cache_is_an_error_not_a_loop(tmp_path):
    with ResultCache(tmp_path / "c", size_limit="64k") as cache:
        with pytest.raises(VitlensError, match="does not fit the cache"):
            cache.put("big", _result(rows=50000))


def test_relabelled_tensors_file_is_recomputed(tmp_path):
    """The cache key covers the data file: relabelling it must not serve the old accuracy."""
    import numpy as np
    import torch

    from vitlens.engine import JobSpec, run
    x = np.random.default_rng(0).standard_normal((16, 3, 32, 32)).astype(np.float32)
    data = tmp_path / "d.npz"
    model_args = {}  # the shipped weights: the same model both times
    spec = JobSpec(analysis="evaluate", model="demo_resnet", model_args=model_args, dataset=f"tensors:{data}",
                   samples=None, batch_size=8, device="cpu")
    torch.manual_seed(0)
    np.savez(data, x=x, y=np.zeros(16, dtype=np.int64))
    first, _ = run(spec)
    np.savez(data, x=x, y=np.ones(16, dtype=np.int64))
    os.utime(data, ns=(os.stat(data).st_atime_ns, os.stat(data).st_mtime_ns + 10**9))
    second, cached = run(spec)
    assert not cached
    assert first.meta["summary"]["accuracy"] + second.meta["summary"]["accuracy"] <= 1.0 + 1e-9


@pytest.mark.parametrize("fault", ["database or disk is full", "unable to open database file",
                                   "disk I/O error"])
def test_a_storage_fault_is_one_line_and_moves_nothing(tmp_path, monkeypatch, fault):
    import sqlite3

    import diskcache
    folder = tmp_path / "c"
    with ResultCache(folder) as cache:
        cache.put("kept", _result())
    database = (folder / "cache.db").stat().st_ino

    def failing(self, *args, **kwargs):
        raise sqlite3.OperationalError(fault)  # what SQLite says on a full disk / read-only mount / bad disk
    monkeypatch.setattr(diskcache.Cache, "get", failing)
    with pytest.raises(VitlensError, match=f"cannot be used \\({fault}; .* MiB free\\); nothing in it was moved"):
        ResultCache(folder)
    monkeypatch.undo()
    assert (folder / "cache.db").stat().st_ino == database  # the same file, not moved aside
    assert not list(folder.glob("cache.db.corrupt-*"))
    with ResultCache(folder) as cache:
        assert cache.get("kept") is not None  # every cached Result is still there


def test_a_full_disk_while_storing_keeps_the_result_and_says_so(tmp_path, monkeypatch, caplog, capsys):
    import sqlite3

    import diskcache
    monkeypatch.setenv("VITLENS_CACHE_DIR", str(tmp_path / "cache"))
    from vitlens.cli import main
    real_set = diskcache.Cache.set

    def full(self, key, value, *args, **kwargs):
        if str(key).startswith("result:"):
            raise sqlite3.OperationalError("database or disk is full")
        return real_set(self, key, value, *args, **kwargs)
    monkeypatch.setattr(diskcache.Cache, "set", full)
    out = tmp_path / "v.csv"
    assert main(["run", "variance", "--samples", "16", "--device", "cpu", "--out", str(out)]) == 0
    assert out.is_file() and "not cached" in caplog.text and "database or disk is full" in caplog.text
    assert (tmp_path / "cache" / "cache.db").is_file()
    assert not list((tmp_path / "cache").glob("cache.db.corrupt-*"))


def test_a_read_only_cache_folder_serves_what_it_holds_and_refuses_new_results(tmp_path, monkeypatch, capsys):
    """A read-only mount (simulated: SQLite refuses to write, as it does there) keeps serving every
    cached Result, through the CLI and the pages; a new computation is refused with one line before it
    runs, and nothing in the folder is moved or deleted."""
    import sqlite3

    import diskcache
    from vitlens.cli import main
    monkeypatch.setenv("VITLENS_CACHE_DIR", str(tmp_path / "cache"))
    assert main(["run", "variance", "--samples", "16", "--device", "cpu"]) == 0
    capsys.readouterr()
    files = sorted(p.name for p in (tmp_path / "cache").iterdir())

    def readonly(self, *args, **kwargs):
        raise sqlite3.OperationalError("attempt to write a readonly database")
    monkeypatch.setattr(diskcache.Cache, "__init__", readonly)
    with ResultCache() as cache:
        assert cache.read_only and len(cache.ls()) == 1
    assert main(["run", "variance", "--samples", "16", "--device", "cpu"]) == 0  # served
    assert "from cache" in capsys.readouterr().err
    assert main(["run", "variance", "--samples", "17", "--device", "cpu"]) == 2  # new: refused before computing
    assert "is read-only" in capsys.readouterr().err
    assert main(["cache", "ls"]) == 0 and "1 entries" in capsys.readouterr().out
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == files


def test_an_empty_or_short_key_is_replaced_and_what_it_sealed_is_refused(tmp_path):
    """A key cut short by a full disk (O_EXCL create, then the write failed) left 0 bytes, and every
    entry was then sealed with hmac(b"", ...): anyone who could write cache.db could forge Results.
    A key of the wrong length is replaced, and an entry sealed with the empty key is never served."""
    import hmac

    from vitlens.store import cache as cache_mod
    from vitlens.store.private import ENVELOPE_MAGIC, SECRET_FILE, SECRET_SIZE
    folder = tmp_path / "c"
    with ResultCache(folder) as cache:
        cache.put("k", _result())
    for bad in (b"", b"short"):
        (folder / SECRET_FILE).write_bytes(bad)
        payload = _result(5).to_bytes()
        forged = ENVELOPE_MAGIC + hmac.new(bad, payload, hashlib.sha256).digest() + payload
        with ResultCache(folder) as cache:
            cache._cache.set(cache_mod.RESULT_PREFIX + "forged", forged)
        key = (folder / SECRET_FILE).read_bytes()
        assert len(key) == SECRET_SIZE and key != bad
        assert oct((folder / SECRET_FILE).stat().st_mode & 0o777) == "0o600"
        with ResultCache(folder) as cache:
            assert cache.get("forged") is None  # sealed with the bad key: refused, dropped
            assert cache.get("k") is None  # sealed with the replaced key: recomputed, never trusted
    assert not [p for p in folder.iterdir() if p.name.startswith(f".{SECRET_FILE}")]  # no temporary left
