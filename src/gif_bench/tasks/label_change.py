"""Label change: the model learns the original labels of a seeded subset U, and the edit moves
it toward corrected ones (g = (1/(m−u)) Σ_U [∇ℓ(z) − ∇ℓ(z')])."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from .. import evaluation
from ..checks import Config, choice, get, number
from ..columns import Column
from ..data import Data, Split
from ..edit import Edit, generator
from ..errors import ConfigError
from .spec import COMMON_TRAJECTORY, TaskSpec

MODES = ("class", "random")


@dataclass(frozen=True)
class Options:
    """``conf/task/label_change.yaml``: ``mode=class`` relabels ``source_fraction`` of
    ``source_class`` as ``new_class``; ``mode=random`` gives ``random_fraction`` of all examples a
    random other label; ``seed`` draws them; the stop rule's threshold (%)."""

    mode: str
    source_class: int
    new_class: int
    source_fraction: float
    random_fraction: float
    seed: int
    stop_self_acc: float


def relabel(y: Tensor, task: Options, num_classes: int) -> tuple[Tensor, Tensor]:
    """(positions, new labels) of the examples a label change corrects, seeded by ``task.seed``.

    ``mode=class``: a ``source_fraction`` of the examples of ``source_class`` get ``new_class``.
    ``mode=random``: a ``random_fraction`` of all examples each get a uniformly drawn other class.
    """
    gen = generator(task.seed)
    if task.mode == "class":
        pool = (y.cpu() == int(task.source_class)).nonzero().squeeze(1)
        n = round(float(task.source_fraction) * len(pool))
        picked = pool[torch.randperm(len(pool), generator=gen)[:n]].sort().values
        return picked.to(y.device), torch.full((n,), int(task.new_class), dtype=y.dtype, device=y.device)
    n = round(float(task.random_fraction) * len(y))
    picked = torch.randperm(len(y), generator=gen)[:n].sort().values
    shift = torch.randint(1, num_classes, (n,), generator=gen)  # never the old label
    new = (y.cpu()[picked] + shift) % num_classes
    return picked.to(y.device), new.to(y.device)


def build(task: Options, data: Data) -> Edit:
    """Correct the labels of a seeded subset U (see :func:`relabel`).

    Evaluation sets: ``self`` (U with the labels the model learnt: old), ``changed`` (U with
    the new labels), ``test`` / ``val`` (the clean splits).
    """
    train = data.train
    index, new_y = relabel(train.y, task, data.num_classes)
    if len(index) == 0:
        raise ValueError("label change selects no training example")
    corrected = Split(train.x[index], new_y)
    return Edit(
        train_set=train,
        removed_index=index,
        corrected=corrected,
        eval_sets={"self": train.subset(index), "changed": corrected, "test": data.test, "val": data.val},
    )


def evaluate(model: nn.Module, edit: Edit, only: tuple[str, ...] | None = None) -> dict[str, float]:
    """Every label-change metric of ``model``: the common ones (``self_acc`` is the accuracy on U
    w.r.t. the old labels, what the edit unlearns) and ``changed_new_acc`` / ``changed_old_acc``
    / ``changed_new_loss`` (U w.r.t. the new / the old labels)."""
    results = evaluation.evaluate(model, edit, (*evaluation.COMMON_SPLITS, "changed"), only)
    out = evaluation.common_of(results)
    out["changed_old_acc"] = out["self_acc"]
    out["changed_new_acc"], out["changed_new_loss"] = results["changed"]
    return out


def validate(cfg: Config) -> None:
    number(cfg, "task.stop_self_acc", 0.0, 100.0)
    classes = get(cfg, "dataset.num_classes")
    if choice(cfg, "task.mode", MODES) == "class":
        source = number(cfg, "task.source_class", 0, classes - 1, integer=True)
        new = number(cfg, "task.new_class", 0, classes - 1, integer=True)
        if source == new:
            raise ConfigError(f"task.new_class={new}", "must differ from task.source_class")
        number(cfg, "task.source_fraction", 0.0, 1.0, lo_open=True)
    else:
        number(cfg, "task.random_fraction", 0.0, 1.0, lo_open=True)


SPEC = TaskSpec(
    options=Options,
    name="label_change",
    label="label change",
    build=build,
    metrics=evaluate,
    reported=(*evaluation.COMMON, "changed_new_acc", "changed_old_acc", "changed_new_loss"),
    columns=(
        Column("test_acc", "max"),
        Column("changed_new_acc", "max"),
        Column("changed_old_acc", "min"),
        Column("f1", "max"),
        Column("gap_to_retrain", "min"),
    ),
    gap_keys=("test_acc", "changed_old_acc", "changed_new_acc"),
    trajectory=(*COMMON_TRAJECTORY, "changed_new_acc"),
    validate=validate,
)
