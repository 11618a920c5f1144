"""From a trained model and a task to an edited model: influence direction and update loop."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from omegaconf import DictConfig, OmegaConf
from torch import Tensor, nn
from tqdm.auto import tqdm

from . import influence
from .data import batches
from .influence import tree
from .tasks import Edit


@dataclass
class Direction:
    delta: dict[str, Tensor]
    mask: dict[str, Tensor]
    info: influence.SolveInfo
    seconds: float


@dataclass
class Trajectory:
    steps: list[dict[str, float]] = field(default_factory=list)
    best: dict[str, float] | None = None
    best_state: dict[str, Tensor] | None = None  # parameters of the best iterate
    reached_threshold: bool = False
    seconds: float = 0.0

    @property
    def final(self) -> dict[str, float]:
        return self.steps[-1]


def _functional(model: nn.Module) -> Callable[[dict[str, Tensor], Tensor], Tensor]:
    buffers = {k: v.detach() for k, v in model.named_buffers()}

    def logits(p: dict[str, Tensor], x: Tensor) -> Tensor:
        return torch.func.functional_call(model, (p, buffers), (x,))

    return logits


def _edit_batch(edit: Edit, index: Tensor | slice) -> tuple[Tensor, Tensor]:
    """Examples of U: images, and labels as learnt — stacked with the corrected ones, as an
    N×2 tensor, for a relabelling (the same images carry both)."""
    removed = edit.removed
    if edit.corrected is None:
        return removed.x[index], removed.y[index]
    return removed.x[index], torch.stack([removed.y[index], edit.corrected.y[index]], dim=1)


def _edit_loss(logits: Tensor, y: Tensor, reduction: str = "mean") -> Tensor:
    """U's loss as the edit sees it: ℓ(z) for a removal, ℓ(z) − ℓ(z') for a relabelling (``y``
    from :func:`_edit_batch`). The selectors rank by it too: a relabelling's learnt labels are
    near-perfectly fitted, so ℓ(z) alone has next to no gradient to rank by."""
    if y.dim() == 1:
        return F.cross_entropy(logits, y, reduction=reduction)
    return F.cross_entropy(logits, y[:, 0], reduction=reduction) - F.cross_entropy(logits, y[:, 1], reduction=reduction)


def removal_gradient(model: nn.Module, edit: Edit, params: dict[str, Tensor], chunk: int = 512) -> dict[str, Tensor]:
    """``g = (1/(m−u)) Σ_{i∈U} ∇ℓ(z_i, θ̂)`` for a removal, ``(1/(m−u)) Σ_{i∈U} [∇ℓ(z_i, θ̂) −
    ∇ℓ(z'_i, θ̂)]`` for a relabelling (z' = the corrected example), over chunks of U."""
    logits = _functional(model)

    def summed(p: dict[str, Tensor], sl: slice) -> Tensor:
        x, y = _edit_batch(edit, sl)
        return _edit_loss(logits(p, x), y, reduction="sum")

    grad = tree.zeros_like(params)
    for sl in batches(edit.u, chunk):
        grad = tree.add(grad, torch.func.grad(summed)(params, sl))
    return tree.scale(grad, 1.0 / (edit.m - edit.u))


def influence_direction(cfg: DictConfig, model: nn.Module, edit: Edit) -> Direction:
    """Select J and solve for Δθ on a fixed Hessian sample of retained training examples.

    ``second_order`` follows Basu et al. instead: its H is taken on a sample of the whole
    training set and its ``H_U`` on a sample of U scaled up to the sum over U — the
    Gauss–Newton part of U's Hessian (``method.hessian_u=gauss_newton``) or all of it
    (``exact``). For a relabelling, U's loss is ``Σ_U [ℓ(z) − ℓ(z')]`` throughout (g, G and
    H_U): the change of the training loss the edit undoes.
    """
    start = time.perf_counter()
    model.eval()
    gen = torch.Generator().manual_seed(int(cfg.seed))
    second_order = cfg.method.name == "second_order"
    pool = torch.arange(edit.m) if second_order else edit.retained_index.cpu()
    h_idx = pool[torch.randperm(len(pool), generator=gen)[: cfg.hessian.samples]].to(edit.train_set.y.device)
    x_h, y_h = edit.train_set.x[h_idx], edit.train_set.y[h_idx]
    s_idx = torch.randperm(edit.u, generator=gen)[: cfg.selector.samples].to(edit.removed.y.device)

    params = {k: v.detach() for k, v in model.named_parameters()}
    folded = influence.fold_batchnorm(model)  # same function, cheaper derivatives
    logits = _functional(folded)

    def hessian_loss(p: dict[str, Tensor]) -> Tensor:
        return F.cross_entropy(logits(p, x_h), y_h)

    grad = removal_gradient(folded, edit, params)
    mask = influence.select(
        cfg.selector.name,
        model,
        ratio=float(cfg.mr),
        batch=_edit_batch(edit, s_idx),
        loss_fn=_edit_loss,
        seed=int(cfg.seed),
    )
    options = {k: v for k, v in OmegaConf.to_container(cfg.solver, resolve=True).items() if k != "name"}
    if cfg.solver.name == "lissa":
        method_lissa = cfg.method.get("lissa")  # only koh and second_order have their own LiSSA options
        if method_lissa is not None:
            options.update(OmegaConf.to_container(method_lissa, resolve=True))
        options.setdefault("seed", int(cfg.seed))
    if cfg.method.name in ("koh", "second_order"):  # every parameter, whatever the selector chose
        mask = {k: torch.ones_like(v, dtype=torch.bool) for k, v in params.items()}
    if second_order:
        u_idx = torch.randperm(edit.u, generator=gen)[: cfg.hessian.samples].to(edit.removed.y.device)
        x_u, y_u = _edit_batch(edit, u_idx)

        def removed_output_loss(z: Tensor) -> Tensor:  # ≈ Σ_{z∈U} ℓ(z) [− ℓ(z')] from a sample of U
            return _edit_loss(z, y_u, reduction="sum") * (edit.u / len(u_idx))

        def removed_logits(p: dict[str, Tensor]) -> Tensor:
            return logits(p, x_u)

        removed_loss, removed_hvp = None, None
        if cfg.method.hessian_u == "gauss_newton":  # built on use, after the first solve, as the exact one is
            removed_hvp = lambda v: influence.ggn_fn(removed_logits, removed_output_loss, params)(v)  # noqa: E731
        else:
            removed_loss = lambda p: removed_output_loss(removed_logits(p))  # noqa: E731
        removed_sum = tree.scale(grad, float(edit.m - edit.u))  # G = Σ_U ∇ℓ
        delta, info = influence.second_order(
            hessian_loss,
            removed_loss,
            params,
            removed_sum,
            removed_hvp=removed_hvp,
            m=edit.m,
            u=edit.u if edit.corrected is None else 0,  # a relabelling removes nothing
            solver=cfg.solver.name,
            return_info=True,
            **options,
        )
    else:
        delta, info = influence.solve(
            cfg.method.name,
            hessian_loss,
            params,
            grad,
            mask=mask,
            solver=cfg.solver.name,
            model=folded,
            return_info=True,
            **options,
        )
    return Direction(delta, mask, info, time.perf_counter() - start)


def apply_updates(
    model: nn.Module,
    edit: Edit,
    delta: dict[str, Tensor],
    *,
    rate: float,
    max_steps: int,
    stop_self_acc: float,
    metric_fn: Callable[[nn.Module, Edit], dict[str, float]],
    on_step: Callable[[dict[str, float], int], Any] | None = None,
) -> Trajectory:
    """θ ← θ + rate · Δθ/‖Δθ‖, evaluating after every step, until ``self_acc < stop_self_acc``.

    The model is left at the final iterate; the best iterate is the one with the highest
    validation F1, and its parameters are kept in ``Trajectory.best_state``.
    """
    norm = tree.norm(delta)
    if not math.isfinite(norm) or norm == 0.0:
        raise RuntimeError(f"the influence direction has norm {norm}; nothing to apply")
    step_vec = tree.scale(delta, rate / norm)
    traj = Trajectory()
    start = time.perf_counter()
    bar = tqdm(range(1, max_steps + 1), desc="update", unit="step", leave=False, dynamic_ncols=True)
    for step in bar:
        with torch.no_grad():
            for name, p in model.named_parameters():
                p.add_(step_vec[name])
        metrics = {"step": step, **metric_fn(model, edit)}
        traj.steps.append(metrics)
        if on_step is not None:
            on_step(metrics, step)
        if traj.best is None or metrics["val_f1"] > traj.best["val_f1"]:
            traj.best = metrics
            traj.best_state = {k: v.detach().clone() for k, v in model.named_parameters()}
        bar.set_postfix(self_acc=f"{metrics['self_acc']:.2f}", test_acc=f"{metrics['test_acc']:.2f}")
        if metrics["self_acc"] < stop_self_acc:
            traj.reached_threshold = True
            break
    bar.close()
    traj.seconds = time.perf_counter() - start
    return traj
