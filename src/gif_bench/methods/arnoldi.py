"""Arnoldi influence (Schioppa et al. 2022): Δθ = V Λ⁻¹ Vᵀ g with (Λ, V) the ``method.rank``
eigenpairs of largest |λ| of the retained-loss Hessian, from ``method.iterations`` Arnoldi steps
(one HVP each) on the Hessian sample."""

from __future__ import annotations

from omegaconf import DictConfig
from torch import Tensor

from .. import influence
from ..checks import number
from ..editing import Problem
from .spec import MethodSpec


def direction(cfg: DictConfig, problem: Problem) -> tuple[dict[str, Tensor], influence.SolveInfo]:
    hvp = influence.hvp_fn(problem.hessian_loss, problem.params, mode=problem.options["hvp"])
    return influence.arnoldi_solve(
        hvp,
        problem.params,
        problem.grad,
        rank=int(cfg.method.rank),
        iterations=int(cfg.method.iterations),
        seed=int(cfg.seed),
    )


def _validate(cfg: DictConfig) -> None:
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
)
