"""ℓ1-sparse unlearning (Jia et al. 2023): fine-tuning with the penalty α (1 − t) ‖θ‖₁ decaying
linearly over the run; 10 epochs at 0.1 × the training learning rate, α = 5·10⁻⁴."""

from dataclasses import replace

from ..unlearning import finetune_plan
from .spec import unlearner


def plan(cfg, model, edit, data):
    base = finetune_plan(edit)
    return replace(base, l1=float(cfg.method.l1), form=f"{base.form} + decaying ℓ1")


SPEC = unlearner("l1_sparse", "ℓ1-sparse", plan, keys=("l1",))
