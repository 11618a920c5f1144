"""Gradient ascent on U (GA; on ℓ(z) − ℓ(z′) for a relabelling); SalUn's recipe: 5 epochs at
0.001 × the training learning rate."""

from ..registry import METHODS, MethodSpec
from ..unlearning import grad_ascent_plan, validate

METHODS.register(
    MethodSpec(
        name="grad_ascent",
        label="Gradient ascent",
        unlearn=lambda cfg, model, edit, data: grad_ascent_plan(edit),
        uses_mask=False,
        family="unlearning",
        keys=("epochs", "published_train_epochs", "lr_factor"),
        validate=validate,
    )
)
