"""Tests for vitlens.data: specs, subsets, transforms, soft targets (no network, a few seconds)."""

import numpy as np
import pytest
import torch

from vitlens.data import list_datasets, load_data, make_loader, soft_targets, subset_indices
from vitlens.errors import VitlensError


class TinyModel(torch.nn.Module):
    """Stands in for a vitlens model: only the timm-style pretrained_cfg matters here."""

    pretrained_cfg = {"input_size": (3, 32, 32), "mean": (0.4914, 0.4822, 0.4465), "std": (0.247, 0.243, 0.261)}


# ----------------------------------------------------------------------------- digits


def test_digits_shapes_sizes_and_classes():
    test, train = load_data("digits"), load_data("digits", split="train")
    assert len(test) + len(train) == 1797
    assert abs(len(test) / 1797 - 0.2) < 0.01
    assert test.num_classes == 10 and test.classes == [str(d) for d in range(10)]
    assert test.spec == "digits" and load_data("default").spec == "digits"
    x, y = test[0]
    assert x.shape == (3, 32, 32) and x.dtype == torch.float32
    assert y.dtype == torch.int64 and 0 <= int(y) < 10
    # stratified: every class in both splits, in about the same proportion
    counts = torch.bincount(test.targets, minlength=10).float() / torch.bincount(train.targets, minlength=10)
    assert torch.all((counts > 0.23) & (counts < 0.27))


def test_digits_normalisation_and_channels():
    data = load_data("digits", mean=(0.5,) * 3, std=(0.5,) * 3)
    # pixels in [0, 1] -> [-1, 1]; blank background is exactly -1; channels are copies
    assert data.x.min() == -1.0 and data.x.max() <= 1.0 and data.x.max() > 0.9
    assert torch.equal(data.x[:, 0], data.x[:, 2])
    gray = load_data("digits", input_size=(1, 16, 16), mean=(0.0,), std=(1.0,))
    assert gray[0][0].shape == (1, 16, 16) and 0 <= gray.x.min() and gray.x.max() <= 1


def test_digits_split_is_fixed_whatever_the_seed():
    a, b = load_data("digits", seed=0), load_data("digits", seed=5)
    assert torch.equal(a.x, b.x) and torch.equal(a.targets, b.targets)


# ----------------------------------------------------------------------------- subsets


def test_subset_is_deterministic_per_seed():
    a = load_data("digits", split="train", samples=50, seed=1)
    b = load_data("digits", split="train", samples=50, seed=1)
    c = load_data("digits", split="train", samples=50, seed=2)
    assert len(a) == 50
    assert torch.equal(a.x, b.x) and torch.equal(a.targets, b.targets)
    assert not torch.equal(a.x, c.x)
    assert torch.equal(subset_indices(100, 10, 3), subset_indices(100, 10, 3))
    assert not torch.equal(subset_indices(100, 10, 3), subset_indices(100, 10, 4))


def test_subset_larger_than_data_keeps_all_and_bad_samples_fail():
    assert len(load_data("digits", samples=10_000)) == len(load_data("digits"))
    with pytest.raises(VitlensError):
        load_data("digits", samples=0)


# ----------------------------------------------------------------------------- model input config


def test_timm_model_config_sets_size_and_imagenet_stats():
    timm = pytest.importorskip("timm")
    model = timm.create_model("resnet18", num_classes=10, pretrained=False)
    data = load_data("digits", samples=4, model=model)
    assert data[0][0].shape == (3, 224, 224)
    assert data.data_config["mean"] == pytest.approx((0.485, 0.456, 0.406))
    assert data.data_config["std"] == pytest.approx((0.229, 0.224, 0.225))


def test_pretrained_cfg_mean_std_are_applied():
    plain = load_data("digits", samples=8, mean=(0.0,) * 3, std=(1.0,) * 3)  # raw [0, 1] pixels
    data = load_data("digits", samples=8, model=TinyModel())
    mean = torch.tensor(TinyModel.pretrained_cfg["mean"]).view(3, 1, 1)
    std = torch.tensor(TinyModel.pretrained_cfg["std"]).view(3, 1, 1)
    assert data.x.shape == (8, 3, 32, 32)
    torch.testing.assert_close(data.x, (plain.x - mean) / std)


# ----------------------------------------------------------------------------- augmentation and loader


@pytest.mark.parametrize("augment", ["crop_flip", "randaugment"])
def test_augmentation_is_reproducible_per_seed(augment):
    plain = load_data("digits", samples=16)
    a = load_data("digits", samples=16, augment=augment, seed=3)
    b = load_data("digits", samples=16, augment=augment, seed=3)
    xa = torch.stack([a[i][0] for i in range(16)])
    xb = torch.stack([b[i][0] for i in range(16)])
    assert xa.shape == plain.x.shape and torch.equal(xa, xb)
    assert not torch.equal(xa, plain.x)
    with pytest.raises(VitlensError, match="augment"):
        load_data("digits", augment="cutout")


def test_loader_shuffle_is_seeded():
    data = load_data("digits", samples=40)

    def first_labels(seed):
        return next(iter(make_loader(data, batch_size=40, shuffle=True, seed=seed)))[1]

    assert torch.equal(first_labels(0), first_labels(0))
    assert not torch.equal(first_labels(0), first_labels(1))
    x, y = next(iter(make_loader(data, batch_size=8)))
    assert x.shape == (8, 3, 32, 32) and y.dtype == torch.int64
    assert len(make_loader(data, batch_size=16, drop_last=True)) == 2


# ----------------------------------------------------------------------------- soft targets


def _batch(n=8, classes=10):
    generator = torch.Generator().manual_seed(0)
    return torch.randn(n, 3, 16, 16, generator=generator), torch.arange(n) % classes


def test_soft_targets_off_is_one_hot_and_x_unchanged():
    x, y = _batch()
    mixed, targets = soft_targets(x, y, 10)
    assert mixed is x
    assert torch.equal(targets, torch.nn.functional.one_hot(y, 10).float())


@pytest.mark.parametrize("options", [
    {"mixup_alpha": 0.8},
    {"cutmix_alpha": 1.0},
    {"label_smoothing": 0.1},
    {"mixup_alpha": 0.8, "cutmix_alpha": 1.0, "label_smoothing": 0.1},
])
def test_soft_targets_rows_sum_to_one(options):
    x, y = _batch()
    for seed in range(5):
        mixed, targets = soft_targets(x, y, 10, generator=torch.Generator().manual_seed(seed), **options)
        assert mixed.shape == x.shape and targets.shape == (8, 10)
        torch.testing.assert_close(targets.sum(1), torch.ones(8))
        assert targets.min() >= 0


def test_label_smoothing_values():
    x, y = _batch()
    _, targets = soft_targets(x, y, 10, label_smoothing=0.1)
    assert targets[0, 0].item() == pytest.approx(0.91) and targets[0, 1].item() == pytest.approx(0.01)


def test_cutmix_label_weight_is_pasted_area():
    x = torch.zeros(4, 1, 10, 10)
    x[1:] = 1.0  # image 0 is black, the others white
    y = torch.tensor([0, 1, 1, 1])
    for seed in range(10):
        mixed, targets = soft_targets(x, y, 2, cutmix_alpha=1.0, generator=torch.Generator().manual_seed(seed))
        # the share of each image that still holds its own pixels equals its own-label weight
        own = (mixed == x).float().mean(dim=(1, 2, 3))
        torch.testing.assert_close(targets.sum(1), torch.ones(4))
        # image 0 (black) gets white pixels only from label-1 images: its label-1 weight is the white area
        torch.testing.assert_close(targets[0, 1], 1 - own[0])


def test_mixup_is_reproducible_with_generator():
    x, y = _batch()
    a = soft_targets(x, y, 10, mixup_alpha=0.8, generator=torch.Generator().manual_seed(7))
    b = soft_targets(x, y, 10, mixup_alpha=0.8, generator=torch.Generator().manual_seed(7))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


# ----------------------------------------------------------------------------- tensors:PATH


def _tensors():
    generator = torch.Generator().manual_seed(0)
    return torch.randn(6, 3, 5, 7, generator=generator), torch.tensor([0, 2, 1, 2, 0, 1])


def test_tensors_npz_round_trip_is_exact(tmp_path):
    x, y = _tensors()
    path = tmp_path / "d.npz"
    np.savez(path, x=x.numpy(), y=y.numpy().astype(np.int32))
    data = load_data(f"tensors:{path}", split="train", input_size=(3, 224, 224))
    assert torch.equal(torch.stack([data[i][0] for i in range(6)]), x)
    assert torch.equal(torch.stack([data[i][1] for i in range(6)]), y)
    assert data.num_classes == 3 and data.spec == f"tensors:{path}"


def test_tensors_safetensors_round_trip_is_exact(tmp_path):
    from safetensors.torch import save_file

    x, y = _tensors()
    path = tmp_path / "d.safetensors"
    save_file({"x": x, "y": y}, str(path))
    data = load_data(f"tensors:{path}")
    assert torch.equal(data.x, x) and torch.equal(data.targets, y)
    assert len(load_data(f"tensors:{path}", samples=4)) == 4


@pytest.mark.parametrize("arrays, message", [
    ({"x": np.zeros((2, 3, 4, 4), np.float32)}, "'y'"),
    ({"x": np.zeros((2, 4, 4), np.float32), "y": np.zeros(2, np.int64)}, "4-D"),
    ({"x": np.zeros((2, 3, 4, 4), np.float32), "y": np.zeros(3, np.int64)}, "match"),
    ({"x": np.zeros((2, 3, 4, 4), np.float32), "y": np.zeros(2, np.float32)}, "integer"),
    ({"x": np.zeros((2, 3, 4, 4), np.uint8), "y": np.zeros(2, np.int64)}, "float"),
])
def test_bad_tensor_files_raise(tmp_path, arrays, message):
    path = tmp_path / "bad.npz"
    np.savez(path, **arrays)
    with pytest.raises(VitlensError, match=message):
        load_data(f"tensors:{path}")


def test_unreadable_tensor_files_raise(tmp_path):
    (tmp_path / "junk.npz").write_bytes(b"not a zip file")
    (tmp_path / "d.pt").write_bytes(b"")
    for name in ("junk.npz", "d.pt", "missing.npz"):
        with pytest.raises(VitlensError) as error:
            load_data(f"tensors:{tmp_path / name}")
        assert "\n" not in str(error.value)


# ----------------------------------------------------------------------------- CIFAR and folders


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


def _image_tree(root, classes=("cat", "dog"), per_class=3, size=(48, 40)):
    from PIL import Image

    rng = np.random.default_rng(0)
    for name in classes:
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            pixels = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
            Image.fromarray(pixels).save(root / name / f"{i}.png")


def test_image_folder(tmp_path):
    _image_tree(tmp_path / "imgs")
    data = load_data(f"folder:{tmp_path / 'imgs'}", model=TinyModel())
    assert len(data) == 6 and data.num_classes == 2 and data.classes == ["cat", "dog"]
    x, y = data[5]
    assert x.shape == (3, 32, 32) and x.dtype == torch.float32 and y == 1
    assert data.spec == f"folder:{tmp_path / 'imgs'}"
    assert len(load_data(f"folder:{tmp_path / 'imgs'}", samples=2)) == 2


def test_image_folder_with_train_and_val(tmp_path):
    _image_tree(tmp_path / "train", per_class=3)
    _image_tree(tmp_path / "val", per_class=1)
    assert len(load_data(f"folder:{tmp_path}", split="train")) == 6
    assert len(load_data(f"folder:{tmp_path}", split="test")) == 2


def test_missing_or_empty_folder_raises(tmp_path):
    with pytest.raises(VitlensError, match="not found"):
        load_data(f"folder:{tmp_path / 'nope'}")
    with pytest.raises(VitlensError, match="no images"):
        load_data(f"folder:{tmp_path}")


# ----------------------------------------------------------------------------- synthetic and errors


def test_synthetic_is_deterministic_and_splits_differ():
    a = load_data("synthetic:classes=4,n=64", split="train")
    b = load_data("synthetic:classes=4,n=64", split="train", seed=9)
    test = load_data("synthetic:classes=4,n=64", split="test")
    assert torch.equal(a.x, b.x) and torch.equal(a.targets, b.targets)
    assert not torch.equal(a.x, test.x)
    assert a.num_classes == 4 and len(a) == 64 and a.x.shape[1:] == (3, 32, 32)
    assert torch.bincount(a.targets).tolist() == [16] * 4
    assert a.spec == "synthetic:classes=4,n=64,noise=0.25"
    assert load_data("synthetic").spec == "synthetic:classes=10,n=512,noise=0.25"


def test_synthetic_classes_are_separable():
    # nearest class mean of the Fourier amplitude: orientation/frequency decide the class
    train, test = load_data("synthetic:n=400", split="train"), load_data("synthetic:n=200", split="test")

    def amplitude(data):
        return torch.fft.fft2(data.x[:, 0]).abs().flatten(1)

    centroids = torch.stack([amplitude(train)[train.targets == k].mean(0) for k in range(10)])
    predicted = torch.cdist(amplitude(test), centroids).argmin(1)
    assert (predicted == test.targets).float().mean() > 0.9


@pytest.mark.parametrize("spec", ["imagenet", "digits:extra", "synthetic:colour=3", "synthetic:classes=1", "", "folder:"])
def test_bad_specs_raise(spec):
    with pytest.raises(VitlensError) as error:
        load_data(spec)
    assert "\n" not in str(error.value)


def test_unknown_spec_lists_known_ones_and_bad_split():
    with pytest.raises(VitlensError, match="cifar10.*synthetic"):
        load_data("mnist")
    with pytest.raises(VitlensError, match="split"):
        load_data("digits", split="val")
