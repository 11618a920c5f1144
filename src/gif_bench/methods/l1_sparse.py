"""ℓ1-sparse unlearning (Jia et al. 2023): fine-tuning with the penalty α (1 − t) ‖θ‖₁ decaying
linearly over the run; 10 epochs at 0.1 × the training learning rate, α = 5·10⁻⁴."""

from dataclasses import dataclass, replace

from .. import unlearning
from ..space import Interval
from ..unlearning import finetune_plan
from .spec import unlearner


@dataclass(frozen=True)
class Options(unlearning.Options):
    """The recipe's options and the penalty's weight α (``l1``)."""

    l1: float


def plan(run, model, edit, data):
    base = finetune_plan(edit)
    return replace(base, l1=run.method.options.l1, form=f"{base.form} + decaying ℓ1")


SPEC = unlearner(
    "l1_sparse", "ℓ1-sparse", plan, keys=("l1",), options=Options, search={"method.l1": Interval(1e-5, 1e-2, log=True)}
)
