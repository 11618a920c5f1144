"""Random removal: U = a seeded random ``fraction`` of the training set, optionally drawn
within one class (``within_class``). The group removal of the paper's Figure 1, the "random
forgetting" of the unlearning literature.

The model retrained without U has never seen U, so it classifies U about as well as any
unseen data: forgetting means matching that, not driving U's accuracy to 0. Neither rule may
read the test split or the oracle, so both compare U with the validation split, the unseen
data at hand:

* stop at the first step where U's accuracy has come down to the validation accuracy;
* the best iterate is the one whose U accuracy is closest to its validation accuracy (the
  model tells U from unseen data least), ties to the higher validation accuracy.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .. import evaluation
from ..checks import Config, get, number
from ..columns import Column
from ..data import Data
from ..edit import Edit, generator
from ..errors import ConfigError
from .spec import TaskSpec


@dataclass(frozen=True)
class Options:
    """``conf/task/random_removal.yaml``: the share of the training set removed (of
    ``within_class``'s examples where it is set), drawn with ``seed``."""

    fraction: float
    seed: int
    within_class: int | None = None


def build(task: Options, data: Data) -> Edit:
    """Remove a seeded ``fraction`` of the training set (of class ``within_class`` only, if set).

    Evaluation sets: ``self`` (U), ``test`` / ``val`` (the whole clean splits).
    """
    train = data.train
    pool = torch.arange(len(train))
    if task.within_class is not None:
        pool = (train.y.cpu() == int(task.within_class)).nonzero().squeeze(1)
    n = round(float(task.fraction) * len(pool))
    if n == 0:
        raise ValueError(f"task.fraction={task.fraction} removes no training example")
    picked = pool[torch.randperm(len(pool), generator=generator(task.seed))[:n]].sort().values
    removed = picked.to(train.y.device)
    return Edit(
        train_set=train,
        removed_index=removed,
        eval_sets={"self": train.subset(removed), "test": data.test, "val": data.val},
    )


def reached_validation(m: dict[str, float], task: Options) -> bool:
    """U's accuracy is down to the validation split's."""
    return m["self_acc"] <= m["val_acc"]


def unseen_like(m: dict[str, float]) -> tuple[float, float]:
    """Higher is better: U's accuracy close to validation's, then validation accuracy."""
    return -abs(m["self_acc"] - m["val_acc"]), m["val_acc"]


def validate(cfg: Config) -> None:
    number(cfg, "task.fraction", 0.0, 1.0, lo_open=True)
    within = get(cfg, "task.within_class")
    if within is not None and not (isinstance(within, int) and 0 <= within < get(cfg, "dataset.num_classes")):
        classes = get(cfg, "dataset.num_classes")
        raise ConfigError(f"task.within_class={within}", f"must be null or an integer in [0, {classes - 1}]")


SPEC = TaskSpec(
    options=Options,
    name="random_removal",
    label="random removal",
    build=build,
    metrics=evaluation.common,
    reported=evaluation.COMMON,
    columns=(
        Column("test_acc", "max"),
        Column("self_acc", None),
        Column("val_acc", "max"),
        Column("gap_to_retrain", "min"),
    ),
    gap_keys=("test_acc", "self_acc"),
    validate=validate,
    stop=reached_validation,
    score=unseen_like,
)
