"""Koh & Liang's influence function over every parameter, in one of two forms (``method.form``).

``squared``, the paper's "IF" row (the authors' research code): GIF's least-squares system over
every Conv/Linear weight and bias, ``(H_Jᵀ H_J)⁻¹ H_Jᵀ g`` with J = ``select("all")``, which is
the undamped squared system ``H_J² x = H_J g`` solved by the run's solver (by the authors'
truncated series under ``solver=authors``). ``classic``: ``H⁻¹ g`` over every parameter,
BatchNorm's included; with ``solver=lissa`` Koh & Liang's damped classic LiSSA with the
method's own ``lissa:`` options (damping, scale, depth), which tends to ``(H + λsI)⁻¹ g``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from torch import Tensor

from .. import influence
from ..checks import Config, choice
from ..editing import Problem, solve_library_method
from ..settings import Run
from .spec import MethodSpec

FORMS = ("squared", "classic")


@dataclass(frozen=True)
class Options:
    """``conf/method/koh.yaml``: the form (``squared`` or ``classic``) and classic LiSSA's own
    options (``lissa``: damping, scale, depth), used with ``form=classic`` and ``solver=lissa``."""

    form: str
    lissa: Mapping[str, Any] | None = None


def direction(run: Run, problem: Problem) -> tuple[dict[str, Tensor], influence.SolveInfo]:
    if run.method.options.form == "classic":
        return solve_library_method(run, problem)
    problem.mask = influence.select("all", problem.model, ratio=1.0)  # every Conv/Linear parameter: the row's J
    return solve_library_method(run, problem, method="gif")


def _validate(cfg: Config) -> None:
    choice(cfg, "method.form", FORMS)


SPEC = MethodSpec(
    name="koh",
    label="Koh & Liang IF",
    direction=direction,
    uses_mask=False,
    keys=("form",),
    validate=_validate,
    options=Options,
)
