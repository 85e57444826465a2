"""Tests for vitlens.data.cifar: offline errors, the data root (no network)."""
import pytest

from vitlens.data import list_datasets, load_data
from vitlens.errors import VitlensError


@pytest.mark.parametrize("name, folder", [("cifar10", "cifar-10-batches-py"), ("cifar100", "cifar-100-python")])
def test_cifar_offline_error_names_the_folder(tmp_path, name, folder):
    with pytest.raises(VitlensError) as error:
        load_data(name, root=str(tmp_path), download=False)
    message = str(error.value)
    assert str(tmp_path) in message and folder in message and "--download" in message
    assert "\n" not in message


def test_cifar_root_from_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("VITLENS_DATA_ROOT", str(tmp_path))
    with pytest.raises(VitlensError, match=str(tmp_path)):
        load_data("cifar10")
    rows = {row["name"]: row for row in list_datasets()}
    assert rows["cifar10"]["offline"] is False and rows["digits"]["offline"] is True
    assert rows["digits"]["sizes"]["train"] + rows["digits"]["sizes"]["test"] == 1797
