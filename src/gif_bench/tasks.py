"""Editing tasks: which training examples an update removes or corrects, and how it is judged.

A task turns the dataset into an :class:`Edit`: the training set the original model learns
from, the examples U whose influence is removed (and, for label changes, their corrected
versions z'), the retained set R for the Hessian, and the named evaluation sets its metrics
read.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from omegaconf import DictConfig
from torch import Tensor

from .data import Data, Split

TASKS = ("class_removal",)


@dataclass
class Edit:
    train_set: Split
    removed: Split
    retained_index: Tensor
    corrected: Split | None = None
    eval_sets: dict[str, Split] = field(default_factory=dict)

    @property
    def m(self) -> int:
        return len(self.train_set)

    @property
    def u(self) -> int:
        return len(self.removed)


def class_removal(cfg: DictConfig, data: Data) -> Edit:
    """Remove every training example of ``cfg.target_class``.

    Evaluation sets: ``self`` (the removed training examples), ``test`` / ``val`` (the other
    classes), ``forget_test`` / ``forget_val`` (the removed class).
    """
    c = int(cfg.target_class)
    train = data.train
    is_c = train.y == c
    return Edit(
        train_set=train,
        removed=train.subset(is_c.nonzero().squeeze(1)),
        retained_index=(~is_c).nonzero().squeeze(1),
        eval_sets={
            "self": train.subset(is_c.nonzero().squeeze(1)),
            "test": data.test.subset((data.test.y != c).nonzero().squeeze(1)),
            "forget_test": data.test.subset((data.test.y == c).nonzero().squeeze(1)),
            "val": data.val.subset((data.val.y != c).nonzero().squeeze(1)),
            "forget_val": data.val.subset((data.val.y == c).nonzero().squeeze(1)),
        },
    )


def build(cfg: DictConfig, data: Data) -> Edit:
    if cfg.name == "class_removal":
        return class_removal(cfg, data)
    raise ValueError(f"task={cfg.name} is not one of {', '.join(TASKS)}")
