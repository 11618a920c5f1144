"""From a trained model and a task to an edited model: influence direction and update loop."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from . import influence
from .data import batches
from .edit import Edit
from .influence import tree
from .selectors import SELECTORS
from .settings import Run


@dataclass
class Direction:
    delta: dict[str, Tensor]
    mask: dict[str, Tensor]
    info: influence.SolveInfo
    seconds: float  # setup (Hessian sample, g, selection) and solve
    solve_seconds: float  # the solve alone
    problem: Problem | None = None  # what was solved (for measurements of the direction, e.g. gif_bench.study)
    stored: bool = False  # taken from a cache (its solve_seconds as measured when it was solved)


def _functional(model: nn.Module) -> Callable[[dict[str, Tensor], Tensor], Tensor]:
    buffers = {k: v.detach() for k, v in model.named_buffers()}

    def logits(p: dict[str, Tensor], x: Tensor) -> Tensor:
        return torch.func.functional_call(model, (p, buffers), (x,))

    return logits


def edit_batch(edit: Edit, index: Tensor | slice) -> tuple[Tensor, Tensor]:
    """Examples of U: images, and labels as learnt — stacked with the corrected ones, as an
    N×2 tensor, for a relabelling (the same images carry both)."""
    removed = edit.removed
    if edit.corrected is None:
        return removed.x[index], removed.y[index]
    return removed.x[index], torch.stack([removed.y[index], edit.corrected.y[index]], dim=1)


def edit_loss(logits: Tensor, y: Tensor, reduction: str = "mean") -> Tensor:
    """U's loss as the edit sees it: ℓ(z) for a removal, ℓ(z) − ℓ(z') for a relabelling (``y``
    from :func:`edit_batch`). The selectors rank by it too: a relabelling's learnt labels are
    near-perfectly fitted, so ℓ(z) alone has next to no gradient to rank by."""
    if y.dim() == 1:
        return F.cross_entropy(logits, y, reduction=reduction)
    return F.cross_entropy(logits, y[:, 0], reduction=reduction) - F.cross_entropy(logits, y[:, 1], reduction=reduction)


def removal_gradient(model: nn.Module, edit: Edit, params: dict[str, Tensor], chunk: int = 512) -> dict[str, Tensor]:
    """``g = (1/(m−u)) Σ_{i∈U} ∇ℓ(z_i, θ̂)`` for a removal, ``(1/(m−u)) Σ_{i∈U} [∇ℓ(z_i, θ̂) −
    ∇ℓ(z'_i, θ̂)]`` for a relabelling (z' = the corrected example), over chunks of U."""
    logits = _functional(model)

    def summed(p: dict[str, Tensor], sl: slice) -> Tensor:
        x, y = edit_batch(edit, sl)
        return edit_loss(logits(p, x), y, reduction="sum")

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


def solver_options(run: Run) -> dict[str, Any]:
    """``run.solver``'s options and ``hvp`` (``run.hessian.product``); with ``solver=lissa`` the
    method's own ``lissa:`` block (Koh & Liang's classic form and second-order's: classic
    LiSSA's damping, scale and depth) merged over them."""
    options = dict(run.solver.options)
    options["hvp"] = run.hessian.product
    if influence.SOLVERS[run.solver.name].lissa:
        own = run.method.options
        method_lissa = getattr(own, "lissa", None)
        if method_lissa is not None and getattr(own, "form", "classic") == "classic":  # classic LiSSA's own
            options.update(method_lissa)
        options.setdefault("seed", run.seed)
    return options


class PosedFor(Protocol):
    """What posing and solving an edit read of a method (a :class:`~gif_bench.methods.MethodSpec`)."""

    uses_mask: bool
    hessian_sample: str
    direction: Callable[[Run, Problem], tuple[dict[str, Tensor], influence.SolveInfo]] | None


def setup(
    run: Run,
    model: nn.Module,
    edit: Edit,
    method: PosedFor | None = None,
    mask: dict[str, Tensor] | None = None,
) -> Problem:
    """Pose ``edit`` for ``method`` (its spec; ``None``: a method such as GIF, with a mask and
    the Hessian sample from R): draw the Hessian sample (from R, or from the whole training set
    for ``hessian_sample="all"``) and the selector's sample of U, compute g, and select J (or
    take ``mask`` as J, without selecting)."""
    hessian_sample = method.hessian_sample if method is not None else "retained"
    model.eval()
    gen = torch.Generator().manual_seed(run.seed)
    pool = torch.arange(edit.m) if hessian_sample == "all" else edit.retained_index.cpu()
    h_idx = pool[torch.randperm(len(pool), generator=gen)[: run.hessian.samples]].to(edit.train_set.y.device)
    x_h, y_h = edit.train_set.x[h_idx], edit.train_set.y[h_idx]
    s_idx = torch.randperm(edit.u, generator=gen)[: run.selector.samples].to(edit.removed.y.device)

    params = {k: v.detach() for k, v in model.named_parameters()}
    folded = influence.fold_batchnorm(model)
    logits = _functional(folded)

    def hessian_loss(p: dict[str, Tensor]) -> Tensor:
        return F.cross_entropy(logits(p, x_h), y_h)

    grad = removal_gradient(folded, edit, params)
    if method is not None and not method.uses_mask:  # every parameter, whatever the selector chose
        mask = {k: torch.ones_like(v, dtype=torch.bool) for k, v in params.items()}
    elif mask is None:
        fisher = None
        if SELECTORS[run.selector.name].uses_fisher:  # the empirical Fisher of the Hessian sample

            def one_loss(p: dict[str, Tensor], x: Tensor, y: Tensor) -> Tensor:
                return F.cross_entropy(logits(p, x[None]), y[None])

            fisher = influence.fisher_diagonal(one_loss, params, x_h, y_h)
        mask = influence.select(
            run.selector.name,
            model,
            ratio=run.mr,
            batch=edit_batch(edit, s_idx),
            loss_fn=edit_loss,
            seed=run.seed,
            grad=grad,
            fisher=fisher,
        )
    options = solver_options(run)
    return Problem(edit, params, folded, logits, hessian_loss, grad, mask, options, gen, model, (x_h, y_h))


def solve_library_method(
    run: Run, problem: Problem, method: str | None = None
) -> tuple[dict[str, Tensor], influence.SolveInfo]:
    """Δθ of ``run.method`` by :func:`gif_bench.influence.solve_linear` (the library's own
    methods, whose config name is their library name), or of the library's ``method``, on
    ``problem.mask``."""
    return influence.solve_linear(
        method or run.method.name,
        problem.hessian_loss,
        problem.params,
        problem.grad,
        mask=problem.mask,
        solver=run.solver.name,
        model=problem.folded,
        **problem.options,
    )


def influence_direction(
    run: Run,
    method: PosedFor,
    model: nn.Module,
    edit: Edit,
    mask: dict[str, Tensor] | None = None,
    stored: Callable[[Problem], tuple[dict[str, Tensor], influence.SolveInfo, float] | None] | None = None,
) -> Direction:
    """Pose the edit (:func:`setup`) at the model's current parameters and solve for Δθ with
    ``method.direction`` (``run.method``'s spec); ``mask`` replaces the selector's J (a recomputed direction
    keeps the first one's). The Hessian sample is the same at every call (seeded by run.seed).
    ``stored(problem)``: this very solve's ``(Δθ, info, solve seconds)`` from a cache, or None
    (the solver study's stored references, :func:`gif_bench.study.stored_solve`); a stored solve
    counts the seconds it took when it was made, as a loaded oracle does."""
    start = time.perf_counter()
    problem = setup(run, model, edit, method, mask=mask)
    if stored is not None and (found := stored(problem)) is not None:
        delta, info, solve_seconds = found
        setup_seconds = time.perf_counter() - start
        return Direction(delta, problem.mask, info, setup_seconds + solve_seconds, solve_seconds, problem, True)
    solving = time.perf_counter()
    delta, info = method.direction(run, problem)
    end = time.perf_counter()
    return Direction(delta, problem.mask, info, end - start, end - solving, problem)
