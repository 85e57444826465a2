"""Checkpoints: every format round-trips, bad files give one clear error, pickles never run code."""
import pathlib

import pytest
import torch
from safetensors.torch import save_file

from vitlens import VitlensError
from vitlens.models import load_checkpoint, load_model, read_checkpoint_metadata, save_checkpoint


def _pair():
    torch.manual_seed(1)
    src = load_model("demo_alternet")
    torch.manual_seed(2)
    dst = load_model("demo_alternet")
    return src, dst


def _same(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.mark.parametrize("suffix,wrap,prefix", [
    (".pt", None, ""), (".pth", "state_dict", ""), (".pth.tar", "model", "module."),
    (".pth", "ema", "_orig_mod."), (".pt", "state_dict", "module._orig_mod."),
])
def test_torch_formats_round_trip(tmp_path, suffix, wrap, prefix):
    src, dst = _pair()
    assert not _same(src, dst)
    state = {prefix + k: v for k, v in src.state_dict().items()}
    payload = state if wrap is None else {wrap: state, "epoch": 3}
    path = tmp_path / f"weights{suffix}"
    torch.save(payload, path)
    load_checkpoint(dst, path)
    assert _same(src, dst)
    x = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(src(x), dst(x), rtol=0, atol=0)


def test_safetensors_round_trip_with_metadata(tmp_path):
    src, dst = _pair()
    path = save_checkpoint(src, tmp_path / "run" / "epoch_003.safetensors",
                           {"dataset": "digits", "epoch": 3, "test_accuracy": 0.97})
    meta = read_checkpoint_metadata(path)
    assert meta["model"] == "demo_alternet" and meta["epoch"] == 3 and meta["test_accuracy"] == 0.97
    load_checkpoint(dst, path)
    assert _same(src, dst)
    # the file is plain safetensors: no pickle anywhere in it
    assert b"\x80\x04" not in path.read_bytes()[:64]


def test_plain_safetensors_from_elsewhere(tmp_path):
    src, dst = _pair()
    save_file({k: v.contiguous() for k, v in src.state_dict().items()}, str(tmp_path / "w.safetensors"))
    load_checkpoint(dst, tmp_path / "w.safetensors")
    assert _same(src, dst)
    assert read_checkpoint_metadata(tmp_path / "w.safetensors") == {}


def _one_line(err):
    return "\n" not in str(err.value)


def test_missing_unexpected_and_shape_errors(tmp_path):
    src, dst = _pair()
    state = src.state_dict()
    missing = {k: v for k, v in state.items() if not k.startswith("fc.")}
    torch.save(missing, tmp_path / "missing.pt")
    with pytest.raises(VitlensError, match=r"missing keys: fc\.weight, fc\.bias") as err:
        load_checkpoint(dst, tmp_path / "missing.pt")
    assert _one_line(err)
    torch.save(dict(state, extra=torch.zeros(1)), tmp_path / "extra.pt")
    with pytest.raises(VitlensError, match="unexpected keys: extra"):
        load_checkpoint(dst, tmp_path / "extra.pt")
    other = load_model("demo_alternet", num_classes=7)
    torch.save(other.state_dict(), tmp_path / "shape.pt")
    with pytest.raises(VitlensError, match=r"shape mismatch: fc\.weight \(7, 64\) vs model \(10, 64\)") as err:
        load_checkpoint(dst, tmp_path / "shape.pt")
    assert _one_line(err)


def test_unreadable_files(tmp_path):
    _, dst = _pair()
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint at all")
    with pytest.raises(VitlensError, match="cannot read checkpoint junk.pt"):
        load_checkpoint(dst, tmp_path / "junk.pt")
    (tmp_path / "junk.safetensors").write_bytes(b"\x00" * 20)
    with pytest.raises(VitlensError, match="cannot read safetensors"):
        load_checkpoint(dst, tmp_path / "junk.safetensors")
    with pytest.raises(VitlensError, match="not found"):
        load_checkpoint(dst, tmp_path / "absent.pt")
    (tmp_path / "weights.txt").write_text("x")
    with pytest.raises(VitlensError, match="must end in"):
        load_checkpoint(dst, tmp_path / "weights.txt")
    torch.save({"state_dict": {}}, tmp_path / "empty.pt")
    with pytest.raises(VitlensError, match="no state_dict|no tensors"):
        load_checkpoint(dst, tmp_path / "empty.pt")


class _Payload:
    """Unpickling this object would create a file (stands in for arbitrary code)."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (pathlib.Path.touch, (pathlib.Path(self.marker),))


def test_malicious_pickle_does_not_run(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pth"
    _, dst = _pair()
    torch.save({"state_dict": dst.state_dict(), "payload": _Payload(str(marker))}, path)
    # sanity: a full unpickle really would create the file
    torch.load(path, weights_only=False)
    assert marker.exists()
    marker.unlink()
    with pytest.raises(VitlensError, match="refused") as err:
        load_checkpoint(dst, path)
    assert _one_line(err)
    assert not marker.exists()
