"""Second-order group influence (Basu, You & Feizi 2020) over every parameter.

Its H is taken on a sample of the whole training set and its ``H_U`` on a sample of U scaled
up to the sum over U: the Gauss–Newton part of U's Hessian (``method.hessian_u=gauss_newton``)
or all of it (``exact``). For a relabelling, U's loss is ``Σ_U [ℓ(z) − ℓ(z')]`` throughout
(g, G and H_U): the change of the training loss the edit undoes.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from .. import influence
from ..checks import Config, choice
from ..editing import Problem, edit_batch, edit_loss
from ..influence import tree
from ..settings import Run
from .spec import MethodSpec

HESSIAN_U = ("gauss_newton", "exact")  # the curvature of the removal set


@dataclass(frozen=True)
class Options:
    """``conf/method/second_order.yaml``: U's curvature (:data:`HESSIAN_U`) and classic LiSSA's
    options for both solves with ``solver=lissa`` (``lissa``)."""

    hessian_u: str
    lissa: Mapping[str, Any] | None = None


def direction(run: Run, problem: Problem) -> tuple[dict[str, Tensor], influence.SolveInfo]:
    edit, params, logits = problem.edit, problem.params, problem.logits
    u_idx = torch.randperm(edit.u, generator=problem.generator)[: run.hessian.samples].to(edit.removed.y.device)
    x_u, y_u = edit_batch(edit, u_idx)

    def removed_output_loss(z: Tensor) -> Tensor:  # ≈ Σ_{z∈U} ℓ(z) [− ℓ(z')] from a sample of U
        return edit_loss(z, y_u, reduction="sum") * (edit.u / len(u_idx))

    def removed_logits(p: dict[str, Tensor]) -> Tensor:
        return logits(p, x_u)

    removed_loss, removed_hvp = None, None
    if run.method.options.hessian_u == "gauss_newton":  # built on use, after the first solve, as the exact one is
        removed_hvp = lambda v: influence.ggn_fn(removed_logits, removed_output_loss, params)(v)  # noqa: E731
    else:
        removed_loss = lambda p: removed_output_loss(removed_logits(p))  # noqa: E731
    return influence.second_order(
        problem.hessian_loss,
        removed_loss,
        params,
        tree.scale(problem.grad, float(edit.m - edit.u)),  # G = Σ_U ∇ℓ
        removed_hvp=removed_hvp,
        m=edit.m,
        u=edit.u if edit.corrected is None else 0,  # a relabelling removes nothing
        solver=run.solver.name,
        return_info=True,
        **problem.options,
    )


def _validate(cfg: Config) -> None:
    choice(cfg, "method.hessian_u", HESSIAN_U)


SPEC = MethodSpec(
    name="second_order",
    label="Second-order IF",
    direction=direction,
    uses_mask=False,
    hessian_sample="all",
    keys=("hessian_u",),
    validate=_validate,
    options=Options,
)
