"""Fine-tuning (the unlearning literature's FT): train on R (a removal) or on the corrected
training set (a relabelling); SalUn's recipe: 10 epochs at 0.1 × the training learning rate."""

from ..registry import METHODS, MethodSpec
from ..unlearning import finetune_plan, validate

METHODS.register(
    MethodSpec(
        name="finetune",
        label="Fine-tune",
        unlearn=lambda cfg, model, edit, data: finetune_plan(edit),
        uses_mask=False,
        family="unlearning",
        keys=("epochs", "published_train_epochs", "lr_factor"),
        validate=validate,
    )
)
