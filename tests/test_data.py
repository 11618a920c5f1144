"""Datasets: seeded splits, on-device augmentation, torchvision's real on-disk format."""

import pickle

import numpy as np
import pytest
import torch
import torchvision
from omegaconf import OmegaConf

from gif_bench import data
from gif_bench.errors import DatasetUnavailable


def _cfg(name, **kw):
    base = OmegaConf.load(f"conf/dataset/{name}.yaml")
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


def test_cifar10_offline_names_the_digits_dataset(tmp_path, monkeypatch):
    for var in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY"):
        monkeypatch.setenv(var, "http://127.0.0.1:9")  # nothing listens: the download fails at once
    monkeypatch.delenv("no_proxy", raising=False)
    monkeypatch.delenv("NO_PROXY", raising=False)
    with pytest.raises(DatasetUnavailable, match="dataset=digits") as err:
        data.load(_cfg("cifar10"), tmp_path / "data")
    assert "\n" not in str(err.value)
    assert list(tmp_path.iterdir()) == []  # no empty folders left behind
