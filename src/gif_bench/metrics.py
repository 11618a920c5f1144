"""The benchmark's metrics, defined once.

Accuracies are percentages in [0, 100]; losses are means of the cross-entropy.

* ``test_acc`` / ``test_loss``: test split without the removed class (class removal).
* ``self_acc`` / ``self_loss``: the removal set U itself (training examples).
* ``forget_test_acc``: test examples of the removed class.
* ``f1 = 2ab/(a+b)``, ``a = test_acc/100``, ``b = 1 − self_acc/100``.
* ``val_acc`` and ``val_f1``: the same on the validation split; the best iterate is chosen by
  ``val_f1`` (never by a test metric).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .data import Split, batches
from .tasks import Edit


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


def class_removal(model: nn.Module, edit: Edit) -> dict[str, float]:
    """Every class-removal metric of ``model``."""
    out: dict[str, float] = {}
    out["test_acc"], out["test_loss"] = accuracy_and_loss(model, edit.eval_sets["test"])
    out["self_acc"], out["self_loss"] = accuracy_and_loss(model, edit.eval_sets["self"])
    out["forget_test_acc"], _ = accuracy_and_loss(model, edit.eval_sets["forget_test"])
    out["val_acc"], _ = accuracy_and_loss(model, edit.eval_sets["val"])
    out["f1"] = f1(out["test_acc"], out["self_acc"])
    out["val_f1"] = f1(out["val_acc"], out["self_acc"])
    return out


TASK_METRICS = {"class_removal": class_removal}
