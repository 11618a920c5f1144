"""Class removal: U = every training example of one class."""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from .. import evaluation
from ..checks import Config, get, number
from ..columns import Column
from ..data import Data
from ..edit import Edit
from .spec import TaskSpec


@dataclass(frozen=True)
class Options:
    """``conf/task/class_removal.yaml``: the class removed, and the stop rule's threshold (%)."""

    target_class: int
    stop_self_acc: float


def build(task: Options, data: Data) -> Edit:
    """Remove every training example of ``task.target_class``.

    Evaluation sets: ``self`` (the removed training examples), ``test`` / ``val`` (the other
    classes), ``forget_test`` / ``forget_val`` (the removed class).
    """
    c = int(task.target_class)
    train = data.train
    removed = (train.y == c).nonzero().squeeze(1)
    return Edit(
        train_set=train,
        removed_index=removed,
        eval_sets={
            "self": train.subset(removed),
            "test": data.test.subset((data.test.y != c).nonzero().squeeze(1)),
            "forget_test": data.test.subset((data.test.y == c).nonzero().squeeze(1)),
            "val": data.val.subset((data.val.y != c).nonzero().squeeze(1)),
            "forget_val": data.val.subset((data.val.y == c).nonzero().squeeze(1)),
        },
    )


def evaluate(model: nn.Module, edit: Edit, only: tuple[str, ...] | None = None) -> dict[str, float]:
    """Every class-removal metric of ``model``: the common ones and ``forget_test_acc`` (test
    examples of the removed class)."""
    results = evaluation.evaluate(model, edit, (*evaluation.COMMON_SPLITS, "forget_test"), only)
    out = evaluation.common_of(results)
    out["forget_test_acc"] = results["forget_test"][0]
    return out


def validate(cfg: Config) -> None:
    number(cfg, "task.stop_self_acc", 0.0, 100.0)
    number(cfg, "task.target_class", 0, get(cfg, "dataset.num_classes") - 1, integer=True)


SPEC = TaskSpec(
    options=Options,
    name="class_removal",
    label="class removal",
    build=build,
    metrics=evaluate,
    reported=(*evaluation.COMMON, "forget_test_acc"),
    columns=(
        Column("test_acc", "max"),
        Column("test_loss", "min"),
        Column("self_acc", "min"),
        Column("self_loss", "max"),
        Column("forget_test_acc", "min"),
        Column("f1", "max"),
        Column("gap_to_retrain", "min"),
    ),
    gap_keys=("test_acc", "self_acc", "forget_test_acc"),
    validate=validate,
)
