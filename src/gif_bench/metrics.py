"""A run's metrics: a model's on an edit's evaluation sets (defined in :mod:`gif_bench.evaluation`,
which the tasks build on, and re-exported here) and ``gap_to_retrain``, the mean absolute
difference to the retrained model over the task's ``gap_keys``."""

from __future__ import annotations

import math

from .evaluation import (
    COMMON,
    COMMON_SPLITS,
    accuracies_and_losses,
    accuracy_and_loss,
    common,
    common_of,
    evaluate,
    f1,
    logits,
    shared_logits,
)
from .tasks import TASKS

__all__ = ["COMMON", "COMMON_SPLITS", "accuracies_and_losses", "accuracy_and_loss", "common", "common_of"]
__all__ += ["evaluate", "f1", "gap", "logits", "shared_logits"]


def gap(metrics: dict[str, float], reference: dict[str, float], task: str) -> float:
    """``gap_to_retrain``: mean |metric − reference metric| over the task's ``gap_keys`` (NaNs skipped)."""
    diffs = [abs(metrics[k] - reference[k]) for k in TASKS[task].gap_keys]
    diffs = [d for d in diffs if not math.isnan(d)]
    return sum(diffs) / len(diffs) if diffs else math.nan
