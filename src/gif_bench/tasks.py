"""Editing tasks: which training examples an update removes or corrects, and how it is judged.

A task turns the dataset into an :class:`Edit`: the training set the original model learns
from, the examples U whose influence is removed (and, for label changes, their corrected
versions z'), the retained set R for the Hessian, the training set retraining from scratch
learns from, and the named evaluation sets its metrics read.

* ``class_removal``: U = every training example of one class.
* ``label_change``: U = a seeded subset relabelled; the model learns the original labels and
  the edit moves it toward the corrected ones.
* ``backdoor``: a seeded ``poison_rate`` of the training images (of classes other than the
  target) carry a trigger and the target label; the model learns that poisoned set, and the
  edit is the label change of the poisoned images back to their true labels.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from omegaconf import DictConfig
from torch import Tensor

from .data import Data, Split

TASKS = ("class_removal", "label_change", "backdoor")
TRIGGERS = ("checkerboard", "patch")
LABEL_CHANGE_MODES = ("class", "random")


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


def _generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(int(seed))


def class_removal(cfg: DictConfig, data: Data) -> Edit:
    """Remove every training example of ``cfg.target_class``.

    Evaluation sets: ``self`` (the removed training examples), ``test`` / ``val`` (the other
    classes), ``forget_test`` / ``forget_val`` (the removed class).
    """
    c = int(cfg.target_class)
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


def relabel(y: Tensor, cfg: DictConfig, num_classes: int) -> tuple[Tensor, Tensor]:
    """(positions, new labels) of the examples a label change corrects, seeded by ``cfg.seed``.

    ``mode=class``: a ``source_fraction`` of the examples of ``source_class`` get ``new_class``.
    ``mode=random``: a ``random_fraction`` of all examples each get a uniformly drawn other class.
    """
    gen = _generator(cfg.seed)
    if cfg.mode == "class":
        pool = (y.cpu() == int(cfg.source_class)).nonzero().squeeze(1)
        n = round(float(cfg.source_fraction) * len(pool))
        picked = pool[torch.randperm(len(pool), generator=gen)[:n]].sort().values
        return picked.to(y.device), torch.full((n,), int(cfg.new_class), dtype=y.dtype, device=y.device)
    n = round(float(cfg.random_fraction) * len(y))
    picked = torch.randperm(len(y), generator=gen)[:n].sort().values
    shift = torch.randint(1, num_classes, (n,), generator=gen)  # never the old label
    new = (y.cpu()[picked] + shift) % num_classes
    return picked.to(y.device), new.to(y.device)


def label_change(cfg: DictConfig, data: Data) -> Edit:
    """Correct the labels of a seeded subset U (see :func:`relabel`).

    Evaluation sets: ``self`` (U with the labels the model learnt: old), ``changed`` (U with
    the new labels), ``test`` / ``val`` (the clean splits).
    """
    train = data.train
    index, new_y = relabel(train.y, cfg, data.num_classes)
    if len(index) == 0:
        raise ValueError("label change selects no training example")
    corrected = Split(train.x[index], new_y)
    return Edit(
        train_set=train,
        removed_index=index,
        corrected=corrected,
        eval_sets={"self": train.subset(index), "changed": corrected, "test": data.test, "val": data.val},
    )


def checkerboard(pixels: Tensor, amount: float = 16.0) -> Tensor:
    """The paper's trigger: ``+amount`` on alternate pixels ((row + column) even, every
    channel), clamped to 255. ``pixels`` are N×C×H×W on the 0–255 scale."""
    h, w = pixels.shape[-2:]
    rows = torch.arange(h, device=pixels.device)[:, None]
    cols = torch.arange(w, device=pixels.device)[None, :]
    on = ((rows + cols) % 2 == 0).to(pixels.dtype)
    return (pixels + amount * on).clamp(max=255.0)


def corner_patch(pixels: Tensor, size: int = 4) -> Tensor:
    """A white ``size``×``size`` square in the bottom-right corner (every channel at 255)."""
    out = pixels.clone()
    out[..., -size:, -size:] = 255.0
    return out


def add_trigger(x: Tensor, data: Data, cfg: DictConfig) -> Tensor:
    """Normalised images with ``cfg.trigger`` stamped on in pixel space."""
    pixels = data.to_pixels(x)
    if cfg.trigger == "checkerboard":
        pixels = checkerboard(pixels, float(cfg.trigger_amount))
    else:
        pixels = corner_patch(pixels, int(cfg.patch_size))
    return data.from_pixels(pixels)


def poison(train: Split, data: Data, cfg: DictConfig) -> tuple[Split, Tensor]:
    """(poisoned training set, poisoned positions): a seeded ``poison_rate`` of all training
    images, drawn from those not already of ``target_class``, triggered and relabelled to it."""
    target = int(cfg.target_class)
    pool = (train.y.cpu() != target).nonzero().squeeze(1)
    n = round(float(cfg.poison_rate) * len(train))
    if n > len(pool):
        raise ValueError(f"task.poison_rate={cfg.poison_rate} asks for more images than are outside the target class")
    index = pool[torch.randperm(len(pool), generator=_generator(cfg.seed))[:n]].sort().values.to(train.y.device)
    x, y = train.x.clone(), train.y.clone()
    x[index] = add_trigger(train.x[index], data, cfg)
    y[index] = target
    return Split(x, y), index


def backdoor(cfg: DictConfig, data: Data) -> Edit:
    """Undo a backdoor: U = the poisoned training images, corrected to their true labels.

    Evaluation sets: ``self`` (U with the target label: still corrupted), ``relabel`` (U with
    the true labels), ``test`` / ``val`` (clean), ``attack`` / ``attack_val`` (triggered test /
    validation images whose true class is not the target, labelled as the target).
    """
    target = int(cfg.target_class)
    poisoned, index = poison(data.train, data, cfg)

    def attack(split: Split) -> Split:
        keep = (split.y != target).nonzero().squeeze(1)
        return Split(add_trigger(split.x[keep], data, cfg), torch.full_like(split.y[keep], target))

    return Edit(
        train_set=poisoned,
        removed_index=index,
        corrected=Split(poisoned.x[index], data.train.y[index]),
        eval_sets={
            "self": poisoned.subset(index),
            "relabel": Split(poisoned.x[index], data.train.y[index]),
            "test": data.test,
            "val": data.val,
            "attack": attack(data.test),
            "attack_val": attack(data.val),
        },
    )


def build(cfg: DictConfig, data: Data) -> Edit:
    if cfg.name == "class_removal":
        return class_removal(cfg, data)
    if cfg.name == "label_change":
        return label_change(cfg, data)
    if cfg.name == "backdoor":
        return backdoor(cfg, data)
    raise ValueError(f"task={cfg.name} is not one of {', '.join(TASKS)}")
