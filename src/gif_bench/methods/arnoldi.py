"""Arnoldi influence (Schioppa et al. 2022): Δθ = V Λ⁻¹ Vᵀ g with (Λ, V) the ``method.rank``
eigenpairs of largest |λ| of the retained-loss Hessian, from ``method.iterations`` Arnoldi steps
(one HVP each) on the Hessian sample."""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

from .. import influence
from ..checks import Config, number
from ..editing import Problem
from ..settings import Run
from .spec import MethodSpec


@dataclass(frozen=True)
class Options:
    """``conf/method/arnoldi.yaml``: eigenpairs kept, and Arnoldi steps (one HVP each)."""

    rank: int
    iterations: int


def direction(run: Run, problem: Problem) -> tuple[dict[str, Tensor], influence.SolveInfo]:
    hvp = influence.hvp_fn(problem.hessian_loss, problem.params, mode=problem.options["hvp"])
    return influence.arnoldi_solve(
        hvp,
        problem.params,
        problem.grad,
        rank=run.method.options.rank,
        iterations=run.method.options.iterations,
        seed=run.seed,
    )


def _validate(cfg: Config) -> None:
    iterations = number(cfg, "method.iterations", 1, 100_000, integer=True)
    number(cfg, "method.rank", 1, iterations, integer=True)


SPEC = MethodSpec(
    name="arnoldi",
    label="Arnoldi IF",
    direction=direction,
    uses_mask=False,
    family="influence",
    keys=("rank", "iterations"),
    validate=_validate,
    options=Options,
)
