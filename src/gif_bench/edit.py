"""The :class:`Edit` every task builds: what the original model learns, what the update
removes or corrects, what retraining learns, and the evaluation sets the task's metrics read."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor

from .data import Split


@dataclass
class Edit:
    train_set: Split  # what the original model learns from
    removed_index: Tensor  # U's positions in train_set
    corrected: Split | None = None  # z': U with corrected labels (a relabelling); None: a removal
    eval_sets: dict[str, Split] = field(default_factory=dict)

    @property
    def removed(self) -> Split:
        """U as the original model learnt it."""
        return self.train_set.subset(self.removed_index)

    @property
    def retained_index(self) -> Tensor:
        """R = the training positions outside U (the Hessian's data)."""
        keep = torch.ones(self.m, dtype=torch.bool, device=self.removed_index.device)
        keep[self.removed_index] = False
        return keep.nonzero().squeeze(1)

    @property
    def m(self) -> int:
        return len(self.train_set)

    @property
    def u(self) -> int:
        return len(self.removed_index)

    def retrain_set(self) -> Split:
        """The training set of the model we should have had: R for a removal, the whole set with
        U's labels corrected for a relabelling."""
        if self.corrected is None:
            return self.train_set.subset(self.retained_index)
        y = self.train_set.y.clone()
        y[self.removed_index] = self.corrected.y
        return Split(self.train_set.x, y)


def generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(int(seed))
