"""Fine-tuning (the unlearning literature's FT): train on R (a removal) or on the corrected
training set (a relabelling); SalUn's recipe: 10 epochs at 0.1 × the training learning rate."""

from ..unlearning import finetune_plan
from .spec import unlearner

SPEC = unlearner("finetune", "Fine-tune", lambda run, model, edit, data: finetune_plan(edit))
