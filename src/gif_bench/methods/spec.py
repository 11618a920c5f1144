"""What the harness knows of an update method (:class:`MethodSpec`) and the registry of them,
:data:`METHODS`; each module of this package registers its own."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from torch import Tensor, nn

from ..data import Data
from ..edit import Edit
from ..editing import Problem
from ..influence import SolveInfo
from ..registry import Registry, Validator, no_checks
from ..settings import Run
from ..space import Interval, IntRange, Space
from ..unlearning import RECIPE_KEYS, Options, Plan, validate


@dataclass(frozen=True)
class MethodSpec:
    """An update method.

    ``direction`` computes Δθ (and the solve's diagnostics) from the edit's :class:`Problem`;
    the oracle (``oracle=True``, retraining from scratch) has none: its row is the retrained
    model's. ``uses_mask=False`` means the update changes every parameter whatever the selector
    chose, so its runs are canonicalised to ``mr=1``, selector ``all``. ``hessian_sample`` says
    which training examples the Hessian sample is drawn from: ``retained`` (R) or ``all``.
    ``keys`` are the method's own config keys (dropped from any other method's config, so that
    a sweep over methods passing one of them runs every other method once); ``options`` is the
    frozen dataclass of its config node (``conf/method/<name>.yaml``), which the run's settings
    carry as ``run.method.options`` (None for a method without options of its own).
    ``direction(run, problem)`` reads the run's :class:`~gif_bench.settings.Run` settings.

    A fine-tuning unlearner has ``unlearn`` instead of ``direction``: ``unlearn(run, model,
    edit, data)`` returns the :class:`~gif_bench.unlearning.Plan` that
    :func:`~gif_bench.unlearning.unlearn` trains. ``family`` groups methods in tables and
    comparisons: ``paper`` (the paper's lineup, compared in its order), ``influence`` (other
    influence estimators) or ``unlearning`` (fine-tuning unlearners).

    ``search`` is the method's tuning space (:mod:`gif_bench.space`) beyond what every influence
    method searches (:data:`INFLUENCE_SPACE`, and :data:`MASK_SPACE` with a mask), which
    :meth:`space` adds: damping, SSD's parameters; :func:`unlearner` starts it from
    :data:`UNLEARNING_SPACE`. The oracle has none.
    """

    name: str
    label: str
    direction: Callable[[Run, Problem], tuple[dict[str, Tensor], SolveInfo]] | None = None
    uses_mask: bool = True
    hessian_sample: str = "retained"
    oracle: bool = False
    keys: tuple[str, ...] = ()
    validate: Validator = no_checks
    unlearn: Callable[[Run, nn.Module, Edit, Data], Plan] | None = None
    family: str = "paper"
    options: type | None = None
    search: Space = field(default_factory=dict)

    def space(self) -> dict[str, object]:
        """Every setting a tuning run of this method searches or holds fixed, by config key."""
        if self.direction is None:
            return dict(self.search)
        return {**INFLUENCE_SPACE, **(MASK_SPACE if self.uses_mask else {}), **self.search}


# What tuning searches for every method of a kind. The ranges span the published settings with
# room on both sides: γ 0.03–0.3 in the paper's tables, MR 5–30 %, the unlearners' learning-rate
# factors 0.001–0.13 and 1–10 epochs. The unlearners are tuned at their own epochs
# (unlearning.scale_epochs off), not at the recipe's share of the published ones.
INFLUENCE_SPACE: Space = {"update.rate": Interval(0.01, 1.0, log=True)}
MASK_SPACE: Space = {"mr": Interval(0.01, 0.5, log=True)}
UNLEARNING_SPACE: Space = {
    "method.lr_factor": Interval(0.001, 1.0, log=True),
    "method.epochs": IntRange(1, 10),
    "unlearning.scale_epochs": False,
}


METHODS: Registry[MethodSpec] = Registry("method")


def unlearner(
    name: str,
    label: str,
    plan: Callable[[Run, nn.Module, Edit, Data], Plan],
    keys: tuple[str, ...] = (),
    options: type = Options,
    search: Space | None = None,
) -> MethodSpec:
    """The :class:`MethodSpec` of a fine-tuning unlearner: no mask, its recipe's keys
    (:data:`~gif_bench.unlearning.RECIPE_KEYS`, plus ``keys``), their validation and its
    ``options`` (:class:`~gif_bench.unlearning.Options`, or a subclass with ``keys``) and its
    own ``search`` space beside :data:`UNLEARNING_SPACE`."""
    return MethodSpec(
        name=name,
        label=label,
        unlearn=plan,
        uses_mask=False,
        family="unlearning",
        keys=(*RECIPE_KEYS, *keys),
        validate=validate,
        options=options,
        search={**UNLEARNING_SPACE, **(search or {})},
    )
