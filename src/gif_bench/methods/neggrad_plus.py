"""NegGrad+ (Kurmanji et al. 2023, "Towards Unbounded Machine Unlearning"): fine-tuning that
descends the retained data while ascending U, ``α · ℓ(R) − (1 − α) · ℓ(U)`` in every step;
the authors' small-scale recipe: α = 0.95, 10 epochs at lr 0.01 (0.1 × a training lr of 0.1),
U's batches of 64 cycled beside R's."""

from __future__ import annotations

from dataclasses import dataclass

from .. import unlearning
from ..space import Interval
from ..unlearning import neggrad_plus_plan
from .spec import unlearner


@dataclass(frozen=True)
class Options(unlearning.Options):
    """The recipe's options, the weight ``alpha`` of R's loss (U's is 1 − alpha) and the size
    of U's batches (``forget_batch``)."""

    alpha: float
    forget_batch: int


def plan(run, model, edit, data):
    options: Options = run.method.options
    return neggrad_plus_plan(edit, options.alpha, options.forget_batch, run.seed)


SPEC = unlearner(
    "neggrad_plus",
    "NegGrad+",
    plan,
    keys=("alpha", "forget_batch"),
    options=Options,
    search={"method.alpha": Interval(0.5, 0.999)},
)
