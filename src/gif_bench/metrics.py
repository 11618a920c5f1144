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
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

if TYPE_CHECKING:
    from .tasks import Edit

from .data import Split, batches


@torch.no_grad()
def accuracy_and_loss(model: nn.Module, split: Split, batch_size: int = 1024) -> tuple[float, float]:
    """(accuracy %, mean cross-entropy) of ``model`` in eval mode on ``split``; NaN if empty."""
    if len(split) == 0:
        return math.nan, math.nan
    model.eval()
    correct, loss = 0, 0.0
    for sl in batches(len(split), batch_size):
        logits = model(split.x[sl]).float()
        loss += float(F.cross_entropy(logits, split.y[sl], reduction="sum"))
        correct += int((logits.argmax(1) == split.y[sl]).sum())
    return 100.0 * correct / len(split), loss / len(split)


def f1(test_acc: float, self_acc: float) -> float:
    """Harmonic mean of ``a = test_acc/100`` and ``b = 1 − self_acc/100`` (0 if both are 0)."""
    a, b = test_acc / 100.0, 1.0 - self_acc / 100.0
    return 0.0 if a + b == 0 else 2 * a * b / (a + b)


COMMON = ("test_acc", "test_loss", "self_acc", "self_loss", "val_acc", "f1", "val_f1")


def common(model: nn.Module, edit: Edit) -> dict[str, float]:
    """The metrics of every task (:data:`COMMON`): test / self / val accuracy and loss, and the
    F1 of test (val) against self. A task's own metrics add to these (``gif_bench.tasks``)."""
    out: dict[str, float] = {}
    out["test_acc"], out["test_loss"] = accuracy_and_loss(model, edit.eval_sets["test"])
    out["self_acc"], out["self_loss"] = accuracy_and_loss(model, edit.eval_sets["self"])
    out["val_acc"], _ = accuracy_and_loss(model, edit.eval_sets["val"])
    out["f1"] = f1(out["test_acc"], out["self_acc"])
    out["val_f1"] = f1(out["val_acc"], out["self_acc"])
    return out


def gap(metrics: dict[str, float], reference: dict[str, float], task: str) -> float:
    """Mean |metric − reference metric| over the task's ``gap_keys`` (NaNs skipped)."""
    from .registry import TASKS

    diffs = [abs(metrics[k] - reference[k]) for k in TASKS[task].gap_keys]
    diffs = [d for d in diffs if not math.isnan(d)]
    return sum(diffs) / len(diffs) if diffs else math.nan
