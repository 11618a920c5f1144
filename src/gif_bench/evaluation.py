"""The benchmark's metrics, defined once.

Accuracies are percentages in [0, 100]; losses are means of the cross-entropy.

* ``test_acc`` / ``test_loss``: the task's test split (without the removed class for a class
  removal).
* ``self_acc`` / ``self_loss``: the removal set U itself (training examples, with the labels
  the model learnt).
* ``f1 = 2ab/(a+b)``, ``a = test_acc/100``, ``b = 1 − self_acc/100``.
* ``val_acc`` and ``val_f1``: the same on the validation split; the best iterate is chosen by
  ``val_f1`` (never by a test metric).

Each task's metrics are defined in its module of :mod:`gif_bench.tasks`, and
``gap_to_retrain`` in :mod:`gif_bench.metrics`.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor, nn

if TYPE_CHECKING:
    from .edit import Edit

from .data import Split, batches


def f1(test_acc: float, self_acc: float) -> float:
    """Harmonic mean of ``a = test_acc/100`` and ``b = 1 − self_acc/100`` (0 if both are 0)."""
    a, b = test_acc / 100.0, 1.0 - self_acc / 100.0
    return 0.0 if a + b == 0 else 2 * a * b / (a + b)


COMMON = ("test_acc", "test_loss", "self_acc", "self_loss", "val_acc", "f1", "val_f1")
COMMON_SPLITS = ("test", "self", "val")  # the evaluation sets COMMON is computed from


_SHARED: ContextVar[dict | None] = ContextVar("gif_bench_shared_logits", default=None)


@contextmanager
def shared_logits() -> Iterator[None]:
    """Within the block, a model's logits on a split are computed once and shared by every
    metric that reads them (the task's accuracies and losses, the oracle-relative KL, agreement
    and membership inference). For a block in which no parameter changes: the run's reported
    iterates, each evaluated in its own block (gif_bench/runner.py, gif_bench/line_search.py)."""
    token = _SHARED.set({})
    try:
        yield
    finally:
        _SHARED.reset(token)


@torch.no_grad()
def logits(model: nn.Module, split: Split, batch_size: int | None = None) -> Tensor:
    """``model``'s logits (eval mode, float32, on the split's device) on ``split``; inside
    :func:`shared_logits`, computed once per (model, split). ``batch_size``: by default 256 on a
    CPU (faster there than larger batches, measured on digits at VGG-11 ×0.25), 1024 elsewhere."""
    memo = _SHARED.get()
    key = (id(model), id(split))
    if memo is not None and key in memo:
        return memo[key]
    model.eval()
    if batch_size is None:
        batch_size = 256 if split.y.device.type == "cpu" else 1024
    parts = [model(split.x[sl]).float() for sl in batches(len(split), batch_size)]
    out = torch.cat(parts) if parts else torch.empty(0, device=split.y.device)
    if memo is not None:
        memo[key] = out
    return out


@torch.no_grad()
def accuracies_and_losses(
    model: nn.Module, splits: Sequence[Split], batch_size: int | None = None
) -> list[tuple[float, float]]:
    """``(accuracy %, mean cross-entropy)`` of ``model`` (eval mode) on each split (NaN for an
    empty one), from :func:`logits`; the sums kept on the device and read back once."""
    sums = torch.zeros(2, len(splits), dtype=torch.float64, device=splits[0].y.device if splits else "cpu")
    for i, split in enumerate(splits):
        if len(split):
            z = logits(model, split, batch_size)
            sums[0, i] = (z.argmax(1) == split.y).sum()
            sums[1, i] = F.cross_entropy(z, split.y, reduction="sum").double()
    hits, total = sums.tolist()
    sizes = [len(s) for s in splits]
    return [(100.0 * h / k, t / k) if k else (math.nan, math.nan) for h, t, k in zip(hits, total, sizes)]


def accuracy_and_loss(model: nn.Module, split: Split, batch_size: int | None = None) -> tuple[float, float]:
    """(accuracy %, mean cross-entropy) of ``model`` in eval mode on ``split``; NaN if empty."""
    return accuracies_and_losses(model, [split], batch_size)[0]


def evaluate(
    model: nn.Module, edit: Edit, names: tuple[str, ...], only: tuple[str, ...] | None = None
) -> dict[str, tuple[float, float]]:
    """:func:`accuracies_and_losses` on the evaluation sets ``names`` of ``edit``, by name; with
    ``only``, the sets outside it are not evaluated and read ``(nan, nan)`` (the line search's
    decisions read U and validation alone: :mod:`gif_bench.line_search`)."""
    run = [n for n in names if only is None or n in only]
    done = dict(zip(run, accuracies_and_losses(model, [edit.eval_sets[n] for n in run])))
    return {n: done.get(n, (math.nan, math.nan)) for n in names}


def common_of(results: dict[str, tuple[float, float]]) -> dict[str, float]:
    """:data:`COMMON` from :func:`evaluate`'s results on (at least) :data:`COMMON_SPLITS`."""
    out: dict[str, float] = {}
    out["test_acc"], out["test_loss"] = results["test"]
    out["self_acc"], out["self_loss"] = results["self"]
    out["val_acc"] = results["val"][0]
    out["f1"] = f1(out["test_acc"], out["self_acc"])
    out["val_f1"] = f1(out["val_acc"], out["self_acc"])
    return out


def common(model: nn.Module, edit: Edit, only: tuple[str, ...] | None = None) -> dict[str, float]:
    """The metrics of every task (:data:`COMMON`): test / self / val accuracy and loss, and the
    F1 of test (val) against self. A task's own metrics add to these (``gif_bench.tasks``).
    ``only``: the evaluation sets to evaluate (:func:`evaluate`)."""
    return common_of(evaluate(model, edit, COMMON_SPLITS, only))
