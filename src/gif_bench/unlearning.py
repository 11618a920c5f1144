"""Fine-tuning unlearners: the machine-unlearning literature's baselines, run with the training
code of :mod:`~gif_bench.train` (same augmentation, device handling and progress bars).

Each method makes a :class:`Plan` (what to train on, with which objective; its ``form`` is
recorded in the row) and :func:`unlearn` runs it for ``method.epochs`` epochs of SGD at
``method.lr_factor`` × the training recipe's learning rate, constant (momentum, weight decay,
batch size and augmentation are the recipe's), evaluating after every epoch. The published
recipes (SalUn, Fan et al. 2024, and ℓ1-sparse, Jia et al. 2023, both on CIFAR-10 trained at
lr 0.1) give the epochs and the learning rates as multiples of that 0.1.

``U`` is the edited data, ``R`` the rest of the training set; for a relabelling (label change,
backdoor) ``U′`` is U with the corrected labels.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .checks import Config, number
from .data import Data, Split, batches
from .edit import Edit
from .editing import edit_batch, edit_loss
from .line_search import Trajectory
from .settings import Recipe, Run
from .train import fit


@dataclass(frozen=True)
class Plan:
    """What an unlearner trains on: ``train_set`` (labels as ``loss`` reads them), the batch
    objective ``loss(logits, y)``, an optional gradient ``mask`` (SalUn's saliency) and the
    weight ``l1`` of an ℓ1 penalty decaying linearly to 0 over the run (ℓ1-sparse)."""

    train_set: Split
    loss: Callable[[Tensor, Tensor], Tensor]
    form: str
    mask: dict[str, Tensor] | None = None
    l1: float = 0.0


@dataclass(frozen=True)
class Options:
    """An unlearner's recipe (``conf/method/<name>.yaml``): ``epochs`` as published for a model
    trained ``published_train_epochs`` epochs, at ``lr_factor`` × the training learning rate."""

    epochs: int
    published_train_epochs: int
    lr_factor: float


def epochs(run: Run) -> int:
    """``method.epochs``, or with ``unlearning.scale_epochs`` the same share of the training
    recipe as published: ``⌈epochs × train.epochs / method.published_train_epochs⌉``."""
    options: Options = run.method.options
    if not run.scale_epochs:
        return options.epochs
    return max(1, math.ceil(options.epochs * run.train.epochs / options.published_train_epochs))


def recipe(run: Run) -> Recipe:
    """The training recipe with the method's :func:`epochs` and its constant learning rate."""
    return run.train.but(epochs=epochs(run), lr=run.method.options.lr_factor * run.train.lr, schedule="constant")


def _concat(*splits: Split) -> Split:
    return Split(torch.cat([s.x for s in splits]), torch.cat([s.y for s in splits]))


def retained(edit: Edit) -> Split:
    return edit.train_set.subset(edit.retained_index)


def random_labels(edit: Edit, num_classes: int, seed: int) -> Split:
    """U with each label replaced by a uniformly drawn different class (seeded)."""
    gen = torch.Generator().manual_seed(seed)
    removed = edit.removed
    shift = torch.randint(1, num_classes, (len(removed),), generator=gen).to(removed.y.device)
    return Split(removed.x, (removed.y + shift) % num_classes)


def finetune_plan(edit: Edit) -> Plan:
    """Fine-tune: on R for a removal; on the corrected training set (R ∪ U′) for a relabelling."""
    if edit.corrected is None:
        return Plan(retained(edit), F.cross_entropy, "fine-tune on R")
    return Plan(edit.retrain_set(), F.cross_entropy, "fine-tune on R ∪ U′ (corrected labels)")


def grad_ascent_plan(edit: Edit) -> Plan:
    """Gradient ascent on U's loss; for a relabelling on ℓ(z) − ℓ(z′) (ascent on the learnt
    labels, descent on the corrected ones)."""
    x, y = edit_batch(edit, slice(None))
    form = "ascent on U" if edit.corrected is None else "ascent on ℓ(U) − ℓ(U′)"
    return Plan(Split(x, y), lambda logits, y: -edit_loss(logits, y), form)


def random_label_plan(edit: Edit, num_classes: int, seed: int) -> Plan:
    """U with random labels (never the learnt one), together with R."""
    relabelled = random_labels(edit, num_classes, seed)
    return Plan(_concat(retained(edit), relabelled), F.cross_entropy, "R ∪ U (random labels)")


def saliency_mask(model: nn.Module, edit: Edit, sparsity: float, chunk: int = 512) -> dict[str, Tensor]:
    """SalUn's weight saliency: the ``sparsity`` fraction of all parameters with the largest
    |∂/∂θ| of U's loss (``ℓ(z) − ℓ(z′)`` for a relabelling), one global threshold."""
    params = dict(model.named_parameters())
    total = {k: torch.zeros_like(p) for k, p in params.items()}
    model.eval()
    for sl in batches(edit.u, chunk):
        x, y = edit_batch(edit, sl)
        grads = torch.autograd.grad(edit_loss(model(x), y, reduction="sum"), list(params.values()))
        for k, g in zip(params, grads):
            total[k] += g.detach()
    magnitude = torch.cat([g.abs().flatten() for g in total.values()])
    k = max(1, int(sparsity * magnitude.numel()))
    threshold = magnitude.topk(k).values[-1]
    return {name: (g.abs() >= threshold).to(g.dtype) for name, g in total.items()}


def l1_penalty(weight: float) -> Callable[[nn.Module, float], Tensor]:
    """``weight · (1 − t) · ‖θ‖₁`` at the fraction ``t`` of the run (the linear decay of ℓ1-sparse)."""

    def penalty(model: nn.Module, t: float) -> Tensor:
        return weight * (1.0 - t) * sum(p.abs().sum() for p in model.parameters())

    return penalty


def unlearn(
    run: Run,
    model: nn.Module,
    edit: Edit,
    data: Data,
    plan: Plan,
    *,
    metric_fn: Callable[[nn.Module, Edit], dict[str, float]],
    score: Callable[[dict[str, float]], object],
    on_step: Callable[[dict[str, float], int], object] | None = None,
) -> Trajectory:
    """Run ``plan`` with :func:`recipe`, evaluating after each epoch (the trajectory's steps are
    epochs); the model is left at the last epoch, the best epoch by ``score`` is kept."""
    traj = Trajectory(stop_reason="epochs")
    device = edit.train_set.y.device

    def on_epoch(epoch: int) -> None:
        traj.evaluate(model, edit, epoch, metric_fn, score, on_step)

    torch.manual_seed(run.seed)
    start = time.perf_counter()
    fit(
        model,
        data,
        plan.train_set,
        recipe(run),
        run.seed,
        device,
        loss_fn=plan.loss,
        penalty=l1_penalty(plan.l1) if plan.l1 else None,
        grad_mask=plan.mask,
        on_epoch=on_epoch,
        desc=run.method.name,
    )
    traj.seconds = time.perf_counter() - start
    return traj


def validate(cfg: Config) -> None:
    """``method.epochs`` a positive integer, ``method.lr_factor`` > 0, and where present
    ``method.l1`` ≥ 0 and ``method.sparsity`` in (0, 1]."""
    number(cfg, "method.epochs", 1, 10_000, integer=True)
    number(cfg, "method.published_train_epochs", 1, 10_000, integer=True)
    number(cfg, "method.lr_factor", 0.0, lo_open=True)
    if "l1" in cfg["method"]:
        number(cfg, "method.l1", 0.0)
    if "sparsity" in cfg["method"]:
        number(cfg, "method.sparsity", 0.0, 1.0, lo_open=True)


RECIPE_KEYS = ("epochs", "published_train_epochs", "lr_factor")
