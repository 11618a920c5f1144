"""The benchmark's metrics, defined once.

Accuracies are percentages in [0, 100]; losses are means of the cross-entropy.

* ``test_acc`` / ``test_loss``: test split without the removed class (class removal).
* ``self_acc`` / ``self_loss``: the removal set U itself (training examples).
* ``forget_test_acc``: test examples of the removed class.
* ``f1 = 2ab/(a+b)``, ``a = test_acc/100``, ``b = 1 − self_acc/100``.
* ``val_acc`` and ``val_f1``: the same on the validation split; the best iterate is chosen by
  ``val_f1`` (never by a test metric).

Label change (U = the relabelled training examples):

* ``changed_new_acc`` / ``changed_old_acc``: accuracy on U w.r.t. the new / the old labels;
  ``self_acc`` is ``changed_old_acc`` (what the edit unlearns, and what stops it).
* ``test_acc`` / ``val_acc``: the whole clean test / validation split.

Backdoor (U = the poisoned training images):

* ``clean_acc``: the clean test split (also reported as ``test_acc``).
* ``attack_success``: triggered test images whose true class is not the target, predicted
  as the target.
* ``relabel_acc``: poisoned training images predicted as their true class.
* ``corrupt_acc``: poisoned training images still predicted as the target (``self_acc``).

``gap_to_retrain`` is the mean absolute difference to the retrained model over
:data:`GAP_KEYS` of the task.
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


def _common(model: nn.Module, edit: Edit) -> dict[str, float]:
    """test / self / val accuracy and loss, and the F1 of test (val) against self."""
    out: dict[str, float] = {}
    out["test_acc"], out["test_loss"] = accuracy_and_loss(model, edit.eval_sets["test"])
    out["self_acc"], out["self_loss"] = accuracy_and_loss(model, edit.eval_sets["self"])
    out["val_acc"], _ = accuracy_and_loss(model, edit.eval_sets["val"])
    out["f1"] = f1(out["test_acc"], out["self_acc"])
    out["val_f1"] = f1(out["val_acc"], out["self_acc"])
    return out


def class_removal(model: nn.Module, edit: Edit) -> dict[str, float]:
    """Every class-removal metric of ``model``."""
    out = _common(model, edit)
    out["forget_test_acc"], _ = accuracy_and_loss(model, edit.eval_sets["forget_test"])
    return out


def label_change(model: nn.Module, edit: Edit) -> dict[str, float]:
    """Every label-change metric of ``model``."""
    out = _common(model, edit)
    out["changed_old_acc"] = out["self_acc"]
    out["changed_new_acc"], out["changed_new_loss"] = accuracy_and_loss(model, edit.eval_sets["changed"])
    return out


def backdoor(model: nn.Module, edit: Edit) -> dict[str, float]:
    """Every backdoor metric of ``model``."""
    out = _common(model, edit)
    out["clean_acc"] = out["test_acc"]
    out["corrupt_acc"] = out["self_acc"]
    out["relabel_acc"], _ = accuracy_and_loss(model, edit.eval_sets["relabel"])
    out["attack_success"], _ = accuracy_and_loss(model, edit.eval_sets["attack"])
    out["val_attack_success"], _ = accuracy_and_loss(model, edit.eval_sets["attack_val"])
    return out


TASK_METRICS = {"class_removal": class_removal, "label_change": label_change, "backdoor": backdoor}

_COMMON = ("test_acc", "test_loss", "self_acc", "self_loss", "val_acc", "f1", "val_f1")
# the metrics a row carries for every model it describes (final, best_, before_, retrain_)
REPORTED = {
    "class_removal": (*_COMMON, "forget_test_acc"),
    "label_change": (*_COMMON, "changed_new_acc", "changed_old_acc", "changed_new_loss"),
    "backdoor": (*_COMMON, "clean_acc", "attack_success", "relabel_acc", "corrupt_acc", "val_attack_success"),
}
GAP_KEYS = {
    "class_removal": ("test_acc", "self_acc", "forget_test_acc"),
    "label_change": ("test_acc", "changed_old_acc", "changed_new_acc"),
    "backdoor": ("clean_acc", "relabel_acc", "attack_success"),
}


def gap(metrics: dict[str, float], reference: dict[str, float], task: str) -> float:
    """Mean |metric − reference metric| over the task's :data:`GAP_KEYS` (NaNs skipped)."""
    diffs = [abs(metrics[k] - reference[k]) for k in GAP_KEYS[task]]
    diffs = [d for d in diffs if not math.isnan(d)]
    return sum(diffs) / len(diffs) if diffs else math.nan
