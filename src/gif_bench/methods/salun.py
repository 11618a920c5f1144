"""SalUn (Fan et al. 2024): random labels, with the updates restricted to the weight-saliency
mask, the ``method.sparsity`` fraction of parameters with the largest |∇ of U's loss|; 10 epochs
at 0.13 × the training learning rate, half the parameters (SalUn's released recipe)."""

from dataclasses import dataclass, replace

from .. import unlearning
from ..space import Interval
from ..unlearning import random_label_plan, saliency_mask
from .spec import unlearner


@dataclass(frozen=True)
class Options(unlearning.Options):
    """The recipe's options and the saliency mask's share of the parameters (``sparsity``)."""

    sparsity: float


def plan(run, model, edit, data):
    base = random_label_plan(edit, data.num_classes, run.seed)
    sparsity = run.method.options.sparsity
    mask = saliency_mask(model, edit, sparsity)
    return replace(base, mask=mask, form=f"{base.form} on the {sparsity:g} saliency mask")


SPEC = unlearner(
    "salun", "SalUn", plan, keys=("sparsity",), options=Options, search={"method.sparsity": Interval(0.1, 0.9)}
)
