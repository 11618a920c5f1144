"""Backdoor: a seeded ``poison_rate`` of the training images (of classes other than the
target) carry a trigger and the target label; the model learns that poisoned set, and the edit
is the label change of the poisoned images back to their true labels."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from .. import evaluation
from ..checks import Config, choice, get, number
from ..columns import Column
from ..data import Data, Split
from ..edit import Edit, generator
from .spec import COMMON_TRAJECTORY, TaskSpec

TRIGGERS = ("checkerboard", "patch")


@dataclass(frozen=True)
class Options:
    """``conf/task/backdoor.yaml``: ``poison_rate`` of all training images (drawn with ``seed``
    outside ``target_class``) get the trigger and the target label; the trigger is a
    ``checkerboard`` of ``trigger_amount`` (0-255 scale) or a white corner ``patch`` of side
    ``patch_size``; the stop rule's threshold (%)."""

    poison_rate: float
    target_class: int
    trigger: str
    trigger_amount: float
    patch_size: int
    seed: int
    stop_self_acc: float


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


def add_trigger(x: Tensor, data: Data, task: Options) -> Tensor:
    """Normalised images with ``task.trigger`` stamped on in pixel space."""
    pixels = data.to_pixels(x)
    if task.trigger == "checkerboard":
        pixels = checkerboard(pixels, float(task.trigger_amount))
    else:
        pixels = corner_patch(pixels, int(task.patch_size))
    return data.from_pixels(pixels)


def poison(train: Split, data: Data, task: Options) -> tuple[Split, Tensor]:
    """(poisoned training set, poisoned positions): a seeded ``poison_rate`` of all training
    images, drawn from those not already of ``target_class``, triggered and relabelled to it."""
    target = int(task.target_class)
    pool = (train.y.cpu() != target).nonzero().squeeze(1)
    n = round(float(task.poison_rate) * len(train))
    if n > len(pool):
        raise ValueError(f"task.poison_rate={task.poison_rate} asks for more images than are outside the target class")
    index = pool[torch.randperm(len(pool), generator=generator(task.seed))[:n]].sort().values.to(train.y.device)
    x, y = train.x.clone(), train.y.clone()
    x[index] = add_trigger(train.x[index], data, task)
    y[index] = target
    return Split(x, y), index


def build(task: Options, data: Data) -> Edit:
    """Undo a backdoor: U = the poisoned training images, corrected to their true labels.

    Evaluation sets: ``self`` (U with the target label: still corrupted), ``relabel`` (U with
    the true labels), ``test`` / ``val`` (clean), ``attack`` / ``attack_val`` (triggered test /
    validation images whose true class is not the target, labelled as the target).
    """
    target = int(task.target_class)
    poisoned, index = poison(data.train, data, task)

    def attack(split: Split) -> Split:
        keep = (split.y != target).nonzero().squeeze(1)
        return Split(add_trigger(split.x[keep], data, task), torch.full_like(split.y[keep], target))

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


def evaluate(model: nn.Module, edit: Edit, only: tuple[str, ...] | None = None) -> dict[str, float]:
    """Every backdoor metric of ``model``: the common ones, ``clean_acc`` (= ``test_acc``),
    ``corrupt_acc`` (= ``self_acc``: poisoned training images still predicted as the target),
    ``relabel_acc`` (poisoned training images predicted as their true class),
    ``attack_success`` (triggered test images of other classes predicted as the target) and
    ``val_attack_success`` (the same on validation)."""
    results = evaluation.evaluate(model, edit, (*evaluation.COMMON_SPLITS, "relabel", "attack", "attack_val"), only)
    out = evaluation.common_of(results)
    out["clean_acc"] = out["test_acc"]
    out["corrupt_acc"] = out["self_acc"]
    out["relabel_acc"] = results["relabel"][0]
    out["attack_success"] = results["attack"][0]
    out["val_attack_success"] = results["attack_val"][0]
    return out


def validate(cfg: Config) -> None:
    number(cfg, "task.stop_self_acc", 0.0, 100.0)
    number(cfg, "task.target_class", 0, get(cfg, "dataset.num_classes") - 1, integer=True)
    number(cfg, "task.poison_rate", 0.0, 1.0, lo_open=True)
    if choice(cfg, "task.trigger", TRIGGERS) == "checkerboard":
        number(cfg, "task.trigger_amount", 0.0, 255.0, lo_open=True)
    else:
        number(cfg, "task.patch_size", 1, get(cfg, "dataset.image_size"), integer=True)


SPEC = TaskSpec(
    options=Options,
    name="backdoor",
    label="backdoor",
    build=build,
    metrics=evaluate,
    reported=(*evaluation.COMMON, "clean_acc", "attack_success", "relabel_acc", "corrupt_acc", "val_attack_success"),
    columns=(
        Column("clean_acc", "max"),
        Column("relabel_acc", "max"),
        Column("attack_success", "min"),
        Column("corrupt_acc", "min"),
        Column("gap_to_retrain", "min"),
    ),
    gap_keys=("clean_acc", "relabel_acc", "attack_success"),
    trajectory=(*COMMON_TRAJECTORY, "attack_success", "relabel_acc"),
    validate=validate,
)
