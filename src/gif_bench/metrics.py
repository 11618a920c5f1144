"""The benchmark's metrics, defined once.

Accuracies are percentages in [0, 100]; losses are means of the cross-entropy.

* ``test_acc`` / ``test_loss``: the task's test split (without the removed class for a class
  removal).
* ``self_acc`` / ``self_loss``: the removal set U itself (training examples, with the labels
  the model learnt).
* ``f1 = 2ab/(a+b)``, ``a = test_acc/100``, ``b = 1 − self_acc/100``.
* ``val_acc`` and ``val_f1``: the same on the validation split; the best iterate is chosen by
  ``val_f1`` (never by a test metric).

``gap_to_retrain`` is the mean absolute difference to the retrained model over the task's
``gap_keys``. Each task's metrics are defined in its module of :mod:`gif_bench.tasks`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

if TYPE_CHECKING:
    from .tasks import Edit

from .data import Split, batches


def f1(test_acc: float, self_acc: float) -> float:
    """Harmonic mean of ``a = test_acc/100`` and ``b = 1 − self_acc/100`` (0 if both are 0)."""
    a, b = test_acc / 100.0, 1.0 - self_acc / 100.0
    return 0.0 if a + b == 0 else 2 * a * b / (a + b)


COMMON = ("test_acc", "test_loss", "self_acc", "self_loss", "val_acc", "f1", "val_f1")
COMMON_SPLITS = ("test", "self", "val")  # the evaluation sets COMMON is computed from


@torch.no_grad()
def accuracies_and_losses(
    model: nn.Module, splits: Sequence[Split], batch_size: int | None = None
) -> list[tuple[float, float]]:
    """``(accuracy %, mean cross-entropy)`` of ``model`` (eval mode) on each split (NaN for an
    empty one): the splits in one concatenated pass, the counts kept on the device and read back
    once. ``batch_size``: by default 256 on a CPU (faster there than larger batches, measured on
    digits at VGG-11 ×0.25), 1024 elsewhere."""
    model.eval()
    sizes = [len(s) for s in splits]
    if sum(sizes) == 0:
        return [(math.nan, math.nan) for _ in splits]
    x = torch.cat([s.x for s in splits])
    y = torch.cat([s.y for s in splits])
    if batch_size is None:
        batch_size = 256 if y.device.type == "cpu" else 1024
    correct_parts, loss_parts = [], []
    for sl in batches(len(y), batch_size):
        logits = model(x[sl]).float()
        correct_parts.append(logits.argmax(1) == y[sl])
        loss_parts.append(F.cross_entropy(logits, y[sl], reduction="none"))
    correct, losses = torch.cat(correct_parts), torch.cat(loss_parts)
    owner = torch.repeat_interleave(torch.arange(len(splits), device=y.device), torch.tensor(sizes, device=y.device))
    sums = torch.zeros(2, len(splits), dtype=torch.float64, device=y.device)
    sums[0].index_add_(0, owner, correct.double())
    sums[1].index_add_(0, owner, losses.double())
    hits, total = sums.tolist()
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


def gap(metrics: dict[str, float], reference: dict[str, float], task: str) -> float:
    """Mean |metric − reference metric| over the task's ``gap_keys`` (NaNs skipped)."""
    from .registry import TASKS

    diffs = [abs(metrics[k] - reference[k]) for k in TASKS[task].gap_keys]
    diffs = [d for d in diffs if not math.isnan(d)]
    return sum(diffs) / len(diffs) if diffs else math.nan
