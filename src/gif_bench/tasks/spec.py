"""What the harness knows of an edit task (:class:`TaskSpec`), its default stop and score rules,
and the registry of tasks, :data:`TASKS`; each module of this package registers its own."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..columns import Column
from ..data import Data
from ..edit import Edit
from ..registry import Registry, Validator, no_checks


def below_stop_self_acc(metrics: dict[str, float], task: Any) -> bool:
    """The default stop rule: U's accuracy below ``task.stop_self_acc`` (%), ``task`` the task's
    options."""
    return metrics["self_acc"] < float(task.stop_self_acc)


def validation_f1(metrics: dict[str, float]) -> tuple[float, float]:
    """The default best-iterate score: F1 of validation accuracy against forgetting U, then the
    validation accuracy. F1 is 0 at every step while U is still fully recognised; the second
    key then prefers the iterate that has damaged the model least, instead of whichever came
    first."""
    return metrics["val_f1"], metrics["val_acc"]


COMMON_TRAJECTORY = ("step", "self_acc", "test_acc", "val_acc")


@dataclass(frozen=True)
class TaskSpec:
    """An edit task: which examples the update removes or corrects, and how it is judged.

    ``build`` turns the dataset into an :class:`~gif_bench.tasks.Edit`; ``metrics(model, edit,
    only=None)`` evaluates a model on it (every key of ``reported``; with ``only``, on those
    evaluation sets alone, the others' metrics NaN); ``reported`` are the metrics a row carries
    for every model it describes (final, ``best_``, ``before_``, ``retrain_``); ``columns`` the
    table's, in order; ``gap_keys`` those averaged by ``gap_to_retrain``; ``trajectory`` the
    per-step fields a row keeps. The update loop stops at the first step where ``stop(metrics,
    options)`` holds (``options``: an instance of the task's ``options`` dataclass, built from
    its config node ``conf/task/<name>.yaml``, which ``build(options, data)`` reads too), and
    the best iterate is the one of highest ``score(metrics)``; neither may read the test split
    or the oracle. ``decides_on`` are the evaluation sets that the stop rule, the score and the
    collapse check (validation accuracy) read: the line search evaluates every iterate on these
    alone (:mod:`gif_bench.line_search`; tests/test_line_search.py checks each task's rules
    against them).
    """

    name: str
    label: str
    build: Callable[[Any, Data], Edit]
    metrics: Callable[..., dict[str, float]]
    reported: tuple[str, ...]
    columns: tuple[Column, ...]
    gap_keys: tuple[str, ...]
    trajectory: tuple[str, ...] = COMMON_TRAJECTORY
    validate: Validator = no_checks
    stop: Callable[[dict[str, float], Any], bool] = below_stop_self_acc
    score: Callable[[dict[str, float]], Any] = validation_f1
    decides_on: tuple[str, ...] = ("self", "val")
    options: type | None = None


TASKS: Registry[TaskSpec] = Registry("task")
