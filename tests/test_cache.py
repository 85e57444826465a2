"""Tests for vitlens.store (the result cache): private folder, keys, compute-once, corruption, no pickles, eviction."""
import os
import sqlite3
import stat

import diskcache
import numpy as np
import pandas as pd
import pytest
import torch

from vitlens.store import cache as cache_mod
from vitlens.store import keys as keys_mod
from vitlens.store import ResultCache, cache_dir, cache_key, model_fingerprint, parse_size
from vitlens.errors import VitlensError
from vitlens.result import Result


def make_result(value: float = 1.0, rows: int = 3) -> Result:
    # Random noise keeps large frames large after Parquet compression.
    noise = np.random.default_rng(rows).random(rows)
    frame = pd.DataFrame({"block": np.arange(rows), "value": np.full(rows, value), "noise": noise})
    return Result(frame=frame, meta={"analysis": "variance", "value": value})


def mode_of(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.fixture
def rc(tmp_path, monkeypatch):
    monkeypatch.setenv("VITLENS_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("VITLENS_CACHE_SIZE", raising=False)
    with ResultCache() as c:
        yield c


class PlantedPayload:
    """Unpickling this calls open(path, 'w'), i.e. it creates a file: proof that code ran."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


# ---------------------------------------------------------------- folder


def test_cache_dir_is_created_private_with_parents(tmp_path, monkeypatch):
    target = tmp_path / "a" / "b" / "results"
    monkeypatch.setenv("VITLENS_CACHE_DIR", str(target))
    assert cache_dir() == target
    assert mode_of(target) == 0o700
    assert mode_of(tmp_path / "a") == 0o700  # parents we created are private too
    assert ResultCache().directory == target


def test_cache_dir_tightens_existing_open_folder(tmp_path, monkeypatch):
    target = tmp_path / "open"
    target.mkdir()
    os.chmod(target, 0o755)
    monkeypatch.setenv("VITLENS_CACHE_DIR", str(target))
    cache_dir()
    assert mode_of(target) == 0o700


def test_cache_dir_default_under_home(tmp_path, monkeypatch):
    monkeypatch.delenv("VITLENS_CACHE_DIR", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert cache_dir() == tmp_path / ".cache" / "vitlens" / "results"
    assert mode_of(tmp_path / ".cache") == 0o700


def test_cache_dir_that_is_a_file_is_a_user_error(tmp_path, monkeypatch):
    (tmp_path / "f").write_text("x")
    monkeypatch.setenv("VITLENS_CACHE_DIR", str(tmp_path / "f"))
    with pytest.raises(VitlensError):
        cache_dir()


# ---------------------------------------------------------------- keys


def test_fingerprint_stable_and_changes_with_one_weight():
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 3)
    first = model_fingerprint(model)
    assert first == model_fingerprint(model)
    clone = torch.nn.Linear(4, 3)
    clone.load_state_dict(model.state_dict())
    assert model_fingerprint(clone) == first  # same weights, same class -> same fingerprint
    with torch.no_grad():
        model.weight[1, 2] += 1e-3
    assert model_fingerprint(model) != first


def test_fingerprint_sees_dtype_and_class():
    model = torch.nn.Linear(4, 3)
    assert model_fingerprint(model.to(torch.bfloat16)) != model_fingerprint(model.to(torch.float32))
    seq = torch.nn.Sequential(torch.nn.Linear(4, 3))
    seq_relu = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU())
    seq_relu[0].load_state_dict(seq[0].state_dict())
    # Same state_dict, different architecture (an activation has no weights).
    assert seq.state_dict().keys() == seq_relu.state_dict().keys()
    assert model_fingerprint(seq) != model_fingerprint(seq_relu)


def test_cache_key_stable_and_sensitive_to_every_part():
    base = dict(fingerprint="f" * 64, data_spec={"name": "cifar10", "samples": 64},
                analysis="hessian", params={"k": 5, "batch_size": 16})
    key = cache_key(**base)
    assert len(key) == 64 and key == cache_key(**base)
    # Dict order does not matter (canonical JSON).
    assert cache_key(**{**base, "params": {"batch_size": 16, "k": 5}}) == key
    variants = [
        {"fingerprint": "e" * 64},
        {"data_spec": {"name": "cifar10", "samples": 65}},
        {"data_spec": "cifar10"},
        {"analysis": "fourier"},
        {"params": {"k": 6, "batch_size": 16}},
        {"params": {"k": 5, "batch_size": 16, "seed": 0}},
    ]
    keys = {cache_key(**{**base, **v}) for v in variants}
    assert key not in keys and len(keys) == len(variants)


def test_cache_key_includes_version(monkeypatch):
    args = ("f" * 64, "cifar10", "lesion", {})
    before = cache_key(*args)
    monkeypatch.setattr(keys_mod, "VERSION", "999.0")
    assert cache_key(*args) != before


def test_cache_key_rejects_non_data_params():
    with pytest.raises(VitlensError):
        cache_key("f", "cifar10", "lesion", {"fn": object()})
    with pytest.raises(VitlensError):
        cache_key("f", "cifar10", "lesion", ["not", "a", "dict"])


@pytest.mark.parametrize("text, expected", [
    ("1024", 1024), ("500M", 500 * 2**20), ("2G", 2 * 2**30), ("64k", 64 * 1024),
    ("1.5GiB", int(1.5 * 2**30)), (4096, 4096),
])
def test_parse_size(text, expected):
    assert parse_size(text) == expected


@pytest.mark.parametrize("text", ["lots", "-5", "0", "2X", ""])
def test_parse_size_rejects_bad_input(text):
    with pytest.raises(VitlensError):
        parse_size(text)


def test_size_limit_from_env_and_default(tmp_path, monkeypatch):
    monkeypatch.setenv("VITLENS_CACHE_DIR", str(tmp_path / "c"))
    monkeypatch.setenv("VITLENS_CACHE_SIZE", "500M")
    with ResultCache() as c:
        assert c.size_limit == 500 * 2**20
        assert c._cache.size_limit == 500 * 2**20
        assert c._cache.eviction_policy == "least-recently-used"
    monkeypatch.delenv("VITLENS_CACHE_SIZE")
    with ResultCache() as c:
        assert c.size_limit == 2 * 2**30


# ---------------------------------------------------------------- get / put / compute


def test_put_get_round_trip(rc):
    result = make_result(2.5)
    assert rc.get("k1") is None
    rc.put("k1", result, {"analysis": "variance", "model": "resnet18", "data": "cifar10"})
    back = rc.get("k1")
    pd.testing.assert_frame_equal(back.frame, result.frame)
    assert back.meta == result.meta
    assert "k1" in rc and "k2" not in rc


def test_get_or_compute_computes_once(rc):
    calls = []

    def compute():
        calls.append(1)
        return make_result(float(len(calls)))

    first, hit1 = rc.get_or_compute("key", compute, {"analysis": "variance"})
    second, hit2 = rc.get_or_compute("key", compute, {"analysis": "variance"})
    assert (hit1, hit2) == (False, True)
    assert len(calls) == 1
    pd.testing.assert_frame_equal(first.frame, second.frame)
    # Another key computes again.
    _, hit3 = rc.get_or_compute("other", compute)
    assert hit3 is False and len(calls) == 2


@pytest.mark.parametrize("error", [RuntimeError("boom"), KeyboardInterrupt()])
def test_failed_or_interrupted_compute_stores_nothing(rc, error):
    def compute():
        raise error

    with pytest.raises(type(error)):
        rc.get_or_compute("key", compute, {"analysis": "hessian"})
    assert "key" not in rc
    assert rc.get("key") is None
    assert rc.ls() == []
    assert len(rc._cache) == 0

    result, hit = rc.get_or_compute("key", lambda: make_result(7.0))
    assert hit is False and result.meta["value"] == 7.0


def test_put_refuses_non_results_and_bad_keys(rc):
    with pytest.raises(TypeError):
        rc.put("k", {"not": "a result"}, {})
    with pytest.raises(VitlensError):
        rc.get("")
    with pytest.raises(VitlensError):
        rc.put("k", make_result(), info="not a dict")


# ---------------------------------------------------------------- corruption and pickles


def corrupt_stored_value(directory, stored_key, mutate):
    """Rewrite the stored bytes of one entry in place (file or SQLite row), like bit rot would.

    Returns True when the value lived in a file, False when it was inline in SQLite."""
    con = sqlite3.connect(os.path.join(directory, "cache.db"))
    try:
        ((filename, value),) = con.execute(
            "SELECT filename, value FROM Cache WHERE key = ?", (stored_key,)).fetchall()
        if filename:
            path = os.path.join(directory, filename)
            with open(path, "rb") as f:
                data = f.read()
            with open(path, "wb") as f:
                f.write(mutate(data))
            return True
        else:
            con.execute("UPDATE Cache SET value = ? WHERE key = ?",
                        (sqlite3.Binary(mutate(bytes(value))), stored_key))
            con.commit()
            return False
    finally:
        con.close()


def flip_middle_byte(data: bytes) -> bytes:
    i = len(data) // 2
    return data[:i] + bytes([data[i] ^ 0xFF]) + data[i + 1:]


@pytest.mark.parametrize("rows", [3, 5000])  # small: inline SQLite row; large: a .val file
@pytest.mark.parametrize("mutate", [flip_middle_byte, lambda d: d[: len(d) // 3], lambda d: b""])
def test_corrupted_entry_is_dropped_and_recomputed(rc, caplog, rows, mutate):
    rc.put("key", make_result(1.0, rows), {"analysis": "variance"})
    stored = cache_mod.RESULT_PREFIX + "key"
    # Sanity: the entry really is where we think.
    with diskcache.Cache(str(rc.directory)) as plain:
        assert isinstance(plain.get(stored), bytes)
    in_file = corrupt_stored_value(str(rc.directory), stored, mutate)
    assert in_file == (rows > 1000)  # both storage paths are exercised

    with caplog.at_level("WARNING", logger="vitlens.cache"):
        assert rc.get("key") is None
    assert "unreadable cache entry" in caplog.text
    assert "key" not in rc and rc.ls() == []

    calls = []
    result, hit = rc.get_or_compute("key", lambda: calls.append(1) or make_result(2.0, rows))
    assert hit is False and calls == [1]
    assert rc.get("key").meta["value"] == 2.0


def test_value_overwritten_by_plain_diskcache_is_rejected(rc):
    rc.put("key", make_result(), {})
    stored = cache_mod.RESULT_PREFIX + "key"
    with diskcache.Cache(str(rc.directory)) as plain:
        plain[stored] = b"VLC1" + b"\0" * 32 + make_result(9.0).to_bytes()  # wrong checksum
    assert rc.get("key") is None
    assert "key" not in rc


def test_planted_pickle_is_never_unpickled(rc, tmp_path):
    marker = tmp_path / "pwned"
    stored = cache_mod.RESULT_PREFIX + "key"
    with diskcache.Cache(str(rc.directory)) as plain:
        plain[stored] = PlantedPayload(marker)  # pickle mode, as an attacker would write it
        plain[cache_mod.INDEX_PREFIX + "key"] = PlantedPayload(marker)
        plain[cache_mod.ALIAS_PREFIX + "key"] = PlantedPayload(marker)
        plain[PlantedPayload(marker)] = "planted under a pickled key"  # runs if keys are listed

    assert rc.get("key") is None
    assert rc.get_by_alias("key") is None
    assert rc.ls() == []
    assert not marker.exists()
    assert "key" not in rc  # the planted entry was removed

    # Control: the payload is live, a plain diskcache read would have run it.
    with diskcache.Cache(str(rc.directory)) as plain:
        plain["control"] = PlantedPayload(marker)
        plain.get("control")
    assert marker.exists()


def test_data_only_disk_refuses_to_pickle(rc):
    with pytest.raises(TypeError):
        rc._cache.set("x", {"a": 1})
    with pytest.raises(TypeError):
        rc._cache.set(("tuple", "key"), b"v")
    with pytest.raises(TypeError):
        rc._cache.set("x", 2**70)  # too big for SQLite: diskcache would pickle it
    assert len(rc._cache) == 0


# ---------------------------------------------------------------- eviction, ls, clear


def test_size_limit_evicts_least_recently_used(tmp_path):
    rng = np.random.default_rng(0)

    def result(i):
        # ~60 kB of incompressible floats: stored as a file, ~14 of them fit in 1 MiB.
        return Result(pd.DataFrame({"x": rng.random(7500)}), {"i": i})

    with ResultCache(tmp_path / "c", size_limit="1M") as c:
        for i in range(25):
            c.put(f"k{i}", result(i), {"analysis": "a"})
            assert c.get("k0") is not None  # keep k0 the most recently used
        c.cull()
        present = {row["key"] for row in c.ls()}
        assert c.volume() <= c.size_limit
        assert "k24" in present  # newest stays
        assert "k0" in present  # recently used survives despite being oldest
        assert {"k1", "k2", "k3"}.isdisjoint(present)  # least recently used went first
        assert 5 <= len(present) < 25
        k0 = next(row for row in c.ls() if row["key"] == "k0")
        assert k0["analysis"] == "a"  # its index record was kept fresh along with it
        # No orphan index records linger for evicted Results.
        index_keys = [k for k in c._cache.iterkeys() if k.startswith(cache_mod.INDEX_PREFIX)]
        assert len(index_keys) == len(present)


def test_ls_and_clear(rc):
    rc.put("a", make_result(1.0), {"analysis": "hessian", "model": "resnet18", "data": "cifar10"})
    rc.put("b", make_result(2.0), {"analysis": "fourier", "model": "vit_ti", "data": {"n": 8}})
    rc.set_alias("c", "a")  # a record that is not a Result: not listed
    rows = rc.ls()
    assert [r["key"] for r in rows] == ["b", "a"]  # newest first
    b = rows[0]
    assert (b["analysis"], b["model"], b["data"]) == ("fourier", "vit_ti", {"n": 8})
    assert b["size"] > 0 and b["created"] <= rows[0]["created"]
    assert set(b) == {"key", "analysis", "model", "data", "size", "created"}

    assert rc.delete("a") is True and rc.delete("a") is False
    assert [r["key"] for r in rc.ls()] == ["b"]
    assert rc.clear() == 1
    assert rc.ls() == [] and len(rc._cache) == 0


def test_ls_lists_result_whose_index_was_lost(rc):
    rc.put("a", make_result(), {"analysis": "hessian"})
    rc._cache.delete(cache_mod.INDEX_PREFIX + "a")
    assert rc.ls() == [{"key": "a", "analysis": None, "model": None, "data": None,
                        "size": None, "created": None}]


def test_ls_drops_index_records_of_evicted_results(rc):
    rc.put("a", make_result(), {"analysis": "hessian"})
    rc.put("b", make_result(), {"analysis": "hessian"})
    rc._cache.delete(cache_mod.RESULT_PREFIX + "a")  # as eviction would
    assert [r["key"] for r in rc.ls()] == ["b"]
    assert cache_mod.INDEX_PREFIX + "a" not in rc._cache
    assert cache_mod.INDEX_PREFIX + "b" in rc._cache


def test_reopen_keeps_entries(tmp_path):
    with ResultCache(tmp_path / "c") as c:
        c.put("k", make_result(3.0), {"analysis": "x"})
    with ResultCache(tmp_path / "c") as c:
        assert c.get("k").meta["value"] == 3.0
