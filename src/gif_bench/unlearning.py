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

import copy
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
from .train import fit, optimizer


@dataclass(frozen=True)
class Plan:
    """What an unlearner trains on: ``train_set`` (labels as ``loss`` reads them; None for a
    training-free unlearner, whose plan has already changed the model, as SSD), the batch
    objective ``loss(logits, y)``, an optional gradient ``mask`` (SalUn's saliency), the
    weight ``l1`` of an ℓ1 penalty decaying linearly to 0 over the run (ℓ1-sparse), and an
    optional ``extra(model, t)`` term added to every step's objective (NegGrad+'s ascent on a
    batch of U; ``t`` the fraction of the steps done). ``examples`` counts the examples the plan
    took through forward and backward itself (SSD's importances)."""

    train_set: Split | None
    loss: Callable[[Tensor, Tensor], Tensor]
    form: str
    mask: dict[str, Tensor] | None = None
    l1: float = 0.0
    extra: Callable[[nn.Module, float], Tensor] | None = None
    extra_examples: int = 0  # examples ``extra`` takes through forward and backward per step
    examples: int = 0
    trainer: Callable[..., None] | None = None
    cost: Callable[[int], tuple[int, int]] | None = None


@dataclass(frozen=True)
class Options:
    """An unlearner's recipe (``conf/method/<name>.yaml``): ``epochs`` as published for a model
    trained ``published_train_epochs`` epochs, at ``lr_factor`` × the training learning rate."""

    epochs: int
    published_train_epochs: int
    lr_factor: float


def epochs(run: Run) -> int:
    """``method.epochs``, or with ``unlearning.scale_epochs`` the same share of the training
    recipe as published: ``⌈epochs × train.epochs / method.published_train_epochs⌉``; 0 for a
    training-free unlearner (options without ``epochs``, as SSD's)."""
    options: Options = run.method.options
    if not hasattr(options, "epochs"):
        return 0
    if not run.scale_epochs:
        return options.epochs
    return max(1, math.ceil(options.epochs * run.train.epochs / options.published_train_epochs))


def examples(run: Run, plan: Plan) -> int:
    """The examples an unlearner takes through forward and backward: those of its plan, its
    epochs of its training set, and ``plan.extra_examples`` at each step."""
    if plan.train_set is None:
        return plan.examples
    if plan.cost is not None:
        return plan.cost(epochs(run))[0]
    n = len(plan.train_set)
    batch = min(recipe(run).batch_size, n)
    steps = max(1, n // batch) if recipe(run).drop_last else math.ceil(n / batch)
    return plan.examples + epochs(run) * (n + steps * plan.extra_examples)


def forwards(run: Run, plan: Plan) -> int:
    """The examples an unlearner takes through forward alone (a teacher's outputs)."""
    return plan.cost(epochs(run))[1] if plan.cost is not None else 0


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


def neggrad_plus_plan(edit: Edit, alpha: float, forget_batch: int, seed: int) -> Plan:
    """NegGrad+ (Kurmanji et al. 2023): each step descends the retained data and ascends U,
    ``α · ℓ(R batch) − (1 − α) · ℓ(U batch)``; one epoch is one pass over the retained data (R,
    or R ∪ U′ for a relabelling, as fine-tuning), each step paired with the next
    ``forget_batch`` examples of U in a seeded order, cycled. U's loss is the edit's
    (:func:`~gif_bench.editing.edit_loss`: ℓ(z) − ℓ(z′) for a relabelling)."""
    base = finetune_plan(edit)
    x_u, y_u = edit_batch(edit, slice(None))
    gen = torch.Generator(device=x_u.device).manual_seed(seed)
    size = min(forget_batch, edit.u)
    queue: list[Tensor] = []

    def ascent(model: nn.Module, t: float) -> Tensor:
        if not queue:  # a new pass over U, in a new order
            order = torch.randperm(edit.u, device=x_u.device, generator=gen)
            queue.extend(order[sl] for sl in batches(edit.u, size))
        idx = queue.pop(0)
        return -(1.0 - alpha) * edit_loss(model(x_u[idx]), y_u[idx])

    form = f"NegGrad+: {alpha:g} × ℓ(R) − {1 - alpha:g} × ℓ(U)" + (" (R ∪ U′)" if edit.corrected is not None else "")
    loss = lambda logits, y: alpha * F.cross_entropy(logits, y)  # noqa: E731
    return Plan(base.train_set, loss, form, extra=ascent, extra_examples=size)


def kl_to_teacher(logits: Tensor, teacher_logits: Tensor, temperature: float) -> Tensor:
    """``T² · KL(softmax(t/T) ‖ softmax(s/T))``, summed over classes and averaged over the batch:
    knowledge distillation's divergence of the student's logits ``s`` from the teacher's ``t``."""
    log_student = F.log_softmax(logits / temperature, dim=1)
    teacher = F.softmax(teacher_logits / temperature, dim=1)
    return F.kl_div(log_student, teacher, reduction="batchmean") * temperature**2


def scrub_plan(
    model: nn.Module,
    edit: Edit,
    *,
    max_steps: int,
    alpha: float,
    gamma: float,
    temperature: float,
    forget_batch: int,
) -> Plan:
    """SCRUB (Kurmanji et al. 2023): the model before the edit is a frozen teacher; each epoch,
    for the first ``max_steps`` epochs, a max-step pass over U ascends the divergence from it,
    ``−KL(teacher ‖ student)`` (batches of ``forget_batch``), then a min-step pass over the
    retained data (R, or R ∪ U′ for a relabelling, as fine-tuning) descends
    ``γ · ℓ(z) + α · KL(teacher ‖ student)``; one SGD optimizer, its momentum kept throughout."""
    teacher = copy.deepcopy(model).eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    retain, forget = finetune_plan(edit).train_set, edit.removed

    def max_loss(logits: Tensor, y: Tensor, taught: Tensor) -> Tensor:
        return -kl_to_teacher(logits, taught, temperature)

    def min_loss(logits: Tensor, y: Tensor, taught: Tensor) -> Tensor:
        return gamma * F.cross_entropy(logits, y) + alpha * kl_to_teacher(logits, taught, temperature)

    def trainer(model, data, recipe: Recipe, seed: int, device, on_epoch, desc: str) -> None:
        opt = optimizer(model, recipe)

        def common(loss_fn, step: str) -> dict:
            return dict(loss_fn=loss_fn, teacher=teacher, reuse=opt, desc=f"{desc} {step}")

        for epoch in range(1, recipe.epochs + 1):
            if epoch <= max_steps:
                once = recipe.but(epochs=1, batch_size=forget_batch)
                fit(model, data, forget, once, seed + epoch, device, **common(max_loss, "max"))
            fit(model, data, retain, recipe.but(epochs=1), seed + epoch, device, **common(min_loss, "min"))
            on_epoch(epoch)

    def cost(epochs: int) -> tuple[int, int]:
        examples = epochs * len(retain) + min(max_steps, epochs) * len(forget)
        return examples, examples  # each through the student (forward and backward) and the teacher

    form = f"SCRUB: {max_steps} max-steps on U, min-steps on R" + (" ∪ U′" if edit.corrected is not None else "")
    return Plan(retain, min_loss, form, trainer=trainer, cost=cost)


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


def _penalty(plan: Plan) -> Callable[[nn.Module, float], Tensor] | None:
    """The plan's terms beside its batch loss: the decaying ℓ1 and its ``extra``, or None."""
    terms = [term for term in (l1_penalty(plan.l1) if plan.l1 else None, plan.extra) if term is not None]
    if not terms:
        return None
    return lambda model, t: sum(term(model, t) for term in terms)


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

    if plan.train_set is None:  # training-free: the plan has changed the model; one step
        traj.stop_reason = "done"
        on_epoch(1)
        return traj

    torch.manual_seed(run.seed)
    start = time.perf_counter()
    if plan.trainer is not None:
        plan.trainer(model, data, recipe(run), run.seed, device, on_epoch, run.method.name)
        traj.seconds = time.perf_counter() - start
        return traj
    fit(
        model,
        data,
        plan.train_set,
        recipe(run),
        run.seed,
        device,
        loss_fn=plan.loss,
        penalty=_penalty(plan),
        grad_mask=plan.mask,
        on_epoch=on_epoch,
        desc=run.method.name,
    )
    traj.seconds = time.perf_counter() - start
    return traj


def validate(cfg: Config) -> None:
    """``method.epochs`` a positive integer, ``method.lr_factor`` > 0, and where present
    ``method.l1`` ≥ 0, ``method.sparsity`` in (0, 1], ``method.alpha`` in [0, 1],
    ``method.forget_batch`` a positive integer, ``method.max_steps`` a non-negative integer,
    ``method.gamma`` ≥ 0 and ``method.temperature`` > 0."""
    number(cfg, "method.epochs", 1, 10_000, integer=True)
    number(cfg, "method.published_train_epochs", 1, 10_000, integer=True)
    number(cfg, "method.lr_factor", 0.0, lo_open=True)
    if "l1" in cfg["method"]:
        number(cfg, "method.l1", 0.0)
    if "sparsity" in cfg["method"]:
        number(cfg, "method.sparsity", 0.0, 1.0, lo_open=True)
    if "alpha" in cfg["method"]:
        number(cfg, "method.alpha", 0.0, 1.0)
    if "forget_batch" in cfg["method"]:
        number(cfg, "method.forget_batch", 1, integer=True)
    if "max_steps" in cfg["method"]:
        number(cfg, "method.max_steps", 0, integer=True)
    for key in ("gamma", "temperature"):
        if key in cfg["method"]:
            number(cfg, f"method.{key}", 0.0, lo_open=key == "temperature")


RECIPE_KEYS = ("epochs", "published_train_epochs", "lr_factor")
