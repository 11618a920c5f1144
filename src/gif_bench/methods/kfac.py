"""K-FAC and EK-FAC influence: Δθ = (G + λI)⁻¹ g with G the (eigenvalue-corrected)
Kronecker-factored Fisher of the retained loss on the Hessian sample, over every Conv/Linear
weight and bias (BatchNorm's parameters are not tracked: Δθ = 0 there), as in kronfluence."""

from __future__ import annotations

from omegaconf import DictConfig
from torch import Tensor

from .. import influence
from ..checks import choice
from ..editing import Problem
from ..errors import ConfigError
from .spec import MethodSpec


def _direction(eigen_corrected: bool):
    def direction(cfg: DictConfig, problem: Problem) -> tuple[dict[str, Tensor], influence.SolveInfo]:
        damping = cfg.method.damping
        return influence.kfac_solve(
            problem.model,
            [problem.hessian_batch],
            problem.grad,
            eigen_corrected=eigen_corrected,
            damping=None if damping is None else float(damping),
            fisher_type=str(cfg.method.fisher_type),
            seed=int(cfg.seed),
        )

    return direction


def _validate(cfg: DictConfig) -> None:
    choice(cfg, "method.fisher_type", influence.curvature.FISHER_TYPES)
    damping = cfg.method.damping
    if damping is not None and not (isinstance(damping, int | float) and damping > 0):
        raise ConfigError(f"method.damping={damping}", "must be a number > 0, or null for 0.1 × the mean eigenvalue")


SPECS = tuple(
    MethodSpec(
        name=name,
        label=label,
        direction=_direction(corrected),
        uses_mask=False,
        family="influence",
        keys=("damping", "fisher_type"),
        validate=_validate,
    )
    for name, label, corrected in (("kfac", "K-FAC IF", False), ("ekfac", "EK-FAC IF", True))
)
