"""K-FAC and EK-FAC influence: Δθ = (G + λI)⁻¹ g with G the (eigenvalue-corrected)
Kronecker-factored Fisher of the retained loss on the Hessian sample, over every Conv/Linear
weight and bias (BatchNorm's parameters are not tracked: Δθ = 0 there), as in kronfluence."""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

from .. import influence
from ..checks import Config, choice, get
from ..editing import Problem
from ..errors import ConfigError
from ..settings import Run
from ..space import Interval
from .spec import MethodSpec


@dataclass(frozen=True)
class Options:
    """``conf/method/kfac.yaml`` and ``ekfac.yaml``: the damping λ (None: 0.1 × the mean
    eigenvalue of the factored Fisher) and the Fisher's labels (``mc``, ``type-2``, ``empirical``)."""

    damping: float | None
    fisher_type: str


def _direction(eigen_corrected: bool):
    def direction(run: Run, problem: Problem) -> tuple[dict[str, Tensor], influence.SolveInfo]:
        damping = run.method.options.damping
        return influence.kfac_solve(
            problem.model,
            [problem.hessian_batch],
            problem.grad,
            eigen_corrected=eigen_corrected,
            damping=damping,
            fisher_type=run.method.options.fisher_type,
            seed=run.seed,
        )

    return direction


def _validate(cfg: Config) -> None:
    choice(cfg, "method.fisher_type", influence.curvature.FISHER_TYPES)
    damping = get(cfg, "method.damping")
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
        options=Options,
        search={"method.damping": Interval(1e-5, 1.0, log=True)},  # around the heuristic's 0.1 × mean eigenvalue
    )
    for name, label, corrected in (("kfac", "K-FAC IF", False), ("ekfac", "EK-FAC IF", True))
)
