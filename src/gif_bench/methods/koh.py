"""Koh & Liang's influence function over every parameter, in one of two forms (``method.form``).

``squared``, the paper's "IF" row (the authors' research code): GIF's least-squares system over
every Conv/Linear weight and bias, ``(H_Jᵀ H_J)⁻¹ H_Jᵀ g`` with J = ``select("all")``, which is
the undamped squared system ``H_J² x = H_J g`` solved by the run's solver (by the authors'
truncated series under ``solver=authors``). ``classic``: ``H⁻¹ g`` over every parameter,
BatchNorm's included; with ``solver=lissa`` Koh & Liang's damped classic LiSSA with the
method's own ``lissa:`` options (damping, scale, depth), which tends to ``(H + λsI)⁻¹ g``.
"""

from __future__ import annotations

from omegaconf import DictConfig
from torch import Tensor

from .. import influence
from ..checks import choice
from ..editing import Problem, solve_library_method
from .spec import MethodSpec

FORMS = ("squared", "classic")


def direction(cfg: DictConfig, problem: Problem) -> tuple[dict[str, Tensor], influence.SolveInfo]:
    if cfg.method.form == "classic":
        return solve_library_method(cfg, problem)
    problem.mask = influence.select("all", problem.model, ratio=1.0)  # every Conv/Linear parameter: the row's J
    return solve_library_method(cfg, problem, method="gif")


def _validate(cfg: DictConfig) -> None:
    choice(cfg, "method.form", FORMS)


SPEC = MethodSpec(
    name="koh",
    label="Koh & Liang IF",
    direction=direction,
    uses_mask=False,
    keys=("form",),
    validate=_validate,
)
