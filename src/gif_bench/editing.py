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
from .registry import METHODS, SELECTORS, MethodSpec, validation_f1
from .tasks import Edit


@dataclass
class Direction:
    delta: dict[str, Tensor]
    mask: dict[str, Tensor]
    info: influence.SolveInfo
    seconds: float  # setup (Hessian sample, g, selection) and solve
    solve_seconds: float  # the solve alone
    problem: Problem | None = None  # what was solved (for measurements of the direction, e.g. gif_bench.study)
    stored: bool = False  # taken from a cache (its solve_seconds as measured when it was solved)


@dataclass
class Trajectory:
    steps: list[dict[str, float]] = field(default_factory=list)
    best: dict[str, float] | None = None
    best_state: dict[str, Tensor] | None = None  # parameters of the best iterate
    reached_threshold: bool = False
    stop_reason: str = "max_steps"  # threshold (the task's stop rule held) | collapse | max_steps | epochs
    seconds: float = 0.0
    boosts: int = 0  # times the rate was multiplied by stall_boost

    @property
    def final(self) -> dict[str, float]:
        return self.steps[-1]

    def evaluate(
        self,
        model: nn.Module,
        edit: Edit,
        step: int,
        metric_fn: Callable[[nn.Module, Edit], dict[str, float]],
        score: Callable[[dict[str, float]], Any],
        on_step: Callable[[dict[str, float], int], Any] | None = None,
    ) -> dict[str, float]:
        """Evaluate ``model`` as iterate ``step``, append it, and keep it (with its parameters)
        if it is the first of the highest ``score`` so far."""
        metrics = {"step": step, **metric_fn(model, edit)}
        self.steps.append(metrics)
        if on_step is not None:
            on_step(metrics, step)
        if self.best is None or score(metrics) > score(self.best):
            self.best = metrics
            self.best_state = {k: v.detach().clone() for k, v in model.named_parameters()}
        return metrics


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


@dataclass
class Problem:
    """An edit posed for an influence method, as the harness poses it for every method.

    ``params`` is θ̂; ``folded`` the model with BatchNorm folded (the same function, cheaper
    derivatives) and ``logits(p, x)`` its functional form; ``hessian_loss`` the mean loss on
    the fixed Hessian sample; ``grad`` the right-hand side g (:func:`removal_gradient`);
    ``mask`` the selector's J (every parameter for a method without a mask); ``options`` the
    solver's options (a method's own ``lissa:`` block merged in for ``solver=lissa``) and
    ``hvp``, how Hessian products are formed (``hessian.product``);
    ``generator`` the run's seeded generator, for any further sample a method draws;
    ``model`` the module itself (BatchNorm unfolded, for methods that hook its layers) and
    ``hessian_batch`` the Hessian sample ``(x, y)`` itself.
    """

    edit: Edit
    params: dict[str, Tensor]
    folded: nn.Module
    logits: Callable[[dict[str, Tensor], Tensor], Tensor]
    hessian_loss: Callable[[dict[str, Tensor]], Tensor]
    grad: dict[str, Tensor]
    mask: dict[str, Tensor]
    options: dict[str, Any]
    generator: torch.Generator
    model: nn.Module
    hessian_batch: tuple[Tensor, Tensor]


def solver_options(cfg: DictConfig) -> dict[str, Any]:
    """``cfg.solver``'s options and ``hvp`` (``cfg.hessian.product``); with ``solver=lissa`` the
    method's own ``lissa:`` block (Koh & Liang's classic form and second-order's: classic
    LiSSA's damping, scale and depth) merged over them."""
    options = {k: v for k, v in OmegaConf.to_container(cfg.solver, resolve=True).items() if k != "name"}
    options["hvp"] = str(cfg.hessian.product)
    if influence.SOLVERS[cfg.solver.name].lissa:
        method_lissa = cfg.method.get("lissa")
        if method_lissa is not None and cfg.method.get("form", "classic") == "classic":  # classic LiSSA's own
            options.update(OmegaConf.to_container(method_lissa, resolve=True))
        options.setdefault("seed", int(cfg.seed))
    return options


def setup(
    cfg: DictConfig,
    model: nn.Module,
    edit: Edit,
    method: MethodSpec | None = None,
    mask: dict[str, Tensor] | None = None,
) -> Problem:
    """Pose ``edit`` for ``method`` (default: ``cfg.method``): draw the Hessian sample (from R,
    or from the whole training set for ``hessian_sample="all"``) and the selector's sample of
    U, compute g, and select J (or take ``mask`` as J, without selecting)."""
    method = method or METHODS[cfg.method.name]
    model.eval()
    gen = torch.Generator().manual_seed(int(cfg.seed))
    pool = torch.arange(edit.m) if method.hessian_sample == "all" else edit.retained_index.cpu()
    h_idx = pool[torch.randperm(len(pool), generator=gen)[: cfg.hessian.samples]].to(edit.train_set.y.device)
    x_h, y_h = edit.train_set.x[h_idx], edit.train_set.y[h_idx]
    s_idx = torch.randperm(edit.u, generator=gen)[: cfg.selector.samples].to(edit.removed.y.device)

    params = {k: v.detach() for k, v in model.named_parameters()}
    folded = influence.fold_batchnorm(model)
    logits = _functional(folded)

    def hessian_loss(p: dict[str, Tensor]) -> Tensor:
        return F.cross_entropy(logits(p, x_h), y_h)

    grad = removal_gradient(folded, edit, params)
    if not method.uses_mask:  # every parameter, whatever the selector chose
        mask = {k: torch.ones_like(v, dtype=torch.bool) for k, v in params.items()}
    elif mask is None:
        fisher = None
        if SELECTORS[cfg.selector.name].uses_fisher:  # the empirical Fisher of the Hessian sample

            def one_loss(p: dict[str, Tensor], x: Tensor, y: Tensor) -> Tensor:
                return F.cross_entropy(logits(p, x[None]), y[None])

            fisher = influence.fisher_diagonal(one_loss, params, x_h, y_h)
        mask = influence.select(
            cfg.selector.name,
            model,
            ratio=float(cfg.mr),
            batch=_edit_batch(edit, s_idx),
            loss_fn=_edit_loss,
            seed=int(cfg.seed),
            grad=grad,
            fisher=fisher,
        )
    options = solver_options(cfg)
    return Problem(edit, params, folded, logits, hessian_loss, grad, mask, options, gen, model, (x_h, y_h))


def solve_library_method(
    cfg: DictConfig, problem: Problem, method: str | None = None
) -> tuple[dict[str, Tensor], influence.SolveInfo]:
    """Δθ of ``cfg.method`` by :func:`gif_bench.influence.solve_linear` (the library's own
    methods, whose config name is their library name), or of the library's ``method``, on
    ``problem.mask``."""
    return influence.solve_linear(
        method or cfg.method.name,
        problem.hessian_loss,
        problem.params,
        problem.grad,
        mask=problem.mask,
        solver=cfg.solver.name,
        model=problem.folded,
        **problem.options,
    )


def influence_direction(
    cfg: DictConfig,
    model: nn.Module,
    edit: Edit,
    mask: dict[str, Tensor] | None = None,
    stored: Callable[[Problem], tuple[dict[str, Tensor], influence.SolveInfo, float] | None] | None = None,
) -> Direction:
    """Pose the edit (:func:`setup`) at the model's current parameters and solve for Δθ with
    ``cfg.method``'s ``direction``; ``mask`` replaces the selector's J (a recomputed direction
    keeps the first one's). The Hessian sample is the same at every call (seeded by cfg.seed).
    ``stored(problem)``: this very solve's ``(Δθ, info, solve seconds)`` from a cache, or None
    (the solver study's stored references, :func:`gif_bench.study.stored_solve`); a stored solve
    counts the seconds it took when it was made, as a loaded oracle does."""
    start = time.perf_counter()
    method = METHODS[cfg.method.name]
    problem = setup(cfg, model, edit, method, mask=mask)
    if stored is not None and (found := stored(problem)) is not None:
        delta, info, solve_seconds = found
        setup_seconds = time.perf_counter() - start
        return Direction(delta, problem.mask, info, setup_seconds + solve_seconds, solve_seconds, problem, True)
    solving = time.perf_counter()
    delta, info = method.direction(cfg, problem)
    end = time.perf_counter()
    return Direction(delta, problem.mask, info, end - start, end - solving, problem)


def apply_updates(
    model: nn.Module,
    edit: Edit,
    delta: dict[str, Tensor],
    *,
    rate: float,
    max_steps: int,
    stop: Callable[[dict[str, float]], bool],
    metric_fn: Callable[[nn.Module, Edit], dict[str, float]],
    score: Callable[[dict[str, float]], Any] = validation_f1,
    on_step: Callable[[dict[str, float], int], Any] | None = None,
    collapse_below: float = -math.inf,
    recompute_every: int | None = None,
    recompute: Callable[[int], dict[str, Tensor]] | None = None,
    stall_boost: float | None = None,
    stall_patience: int = 10,
) -> Trajectory:
    """θ ← θ + rate · Δθ/‖Δθ‖, evaluating after every step, until ``stop(metrics)`` (stop
    reason ``threshold``), until the validation accuracy falls below ``collapse_below``
    (``collapse``: the edit is destroying the model), or for ``max_steps`` steps.

    The model is left at the final iterate; the best iterate is the first one of the highest
    ``score`` (the task's; by default the validation F1), and its parameters are kept in
    ``Trajectory.best_state``.

    Iterative editing: with ``recompute_every=N``, after every N-th step Δθ is replaced by
    ``recompute(step)`` (the direction re-linearised at the current iterate). With
    ``stall_boost=c``, the rate is multiplied by c whenever progress stalls: U's accuracy
    (``self_acc``) is no lower than it was ``stall_patience`` steps before (the paper's "γ × 5
    when progress stalls"); the stall window then starts again.
    """
    if recompute_every is not None and (recompute is None or recompute_every < 1):
        raise ValueError("recompute_every needs a positive interval and a recompute function")

    def unit_step(direction: dict[str, Tensor]) -> dict[str, Tensor]:
        norm = tree.norm(direction)
        if not math.isfinite(norm) or norm == 0.0:
            raise RuntimeError(f"the influence direction has norm {norm}; nothing to apply")
        return tree.scale(direction, 1.0 / norm)

    unit = unit_step(delta)
    traj = Trajectory()
    since_boost = 0
    start = time.perf_counter()
    bar = tqdm(range(1, max_steps + 1), desc="update", unit="step", leave=False, dynamic_ncols=True)
    for step in bar:
        with torch.no_grad():
            for name, p in model.named_parameters():
                p.add_(unit[name], alpha=rate)
        metrics = traj.evaluate(model, edit, step, metric_fn, score, on_step)
        bar.set_postfix(self_acc=f"{metrics['self_acc']:.2f}", test_acc=f"{metrics['test_acc']:.2f}")
        traj.reached_threshold = stop(metrics)
        if metrics["val_acc"] < collapse_below:  # checked first: forgetting by wrecking the model is a collapse
            traj.stop_reason = "collapse"
            break
        if traj.reached_threshold:
            traj.stop_reason = "threshold"
            break
        since_boost += 1
        if stall_boost is not None and since_boost >= stall_patience and len(traj.steps) > stall_patience:
            if metrics["self_acc"] >= traj.steps[-1 - stall_patience]["self_acc"]:
                rate *= float(stall_boost)
                traj.boosts += 1
                since_boost = 0
        if recompute_every is not None and step % recompute_every == 0 and step < max_steps:
            unit = unit_step(recompute(step))
    bar.close()
    traj.seconds = time.perf_counter() - start
    return traj
