"""Random labels (RL): U relabelled at random, trained together with R; SalUn's recipe: 10
epochs at 0.13 × the training learning rate."""

from ..registry import METHODS, MethodSpec
from ..unlearning import random_label_plan, validate

METHODS.register(
    MethodSpec(
        name="random_label",
        label="Random labels",
        unlearn=lambda cfg, model, edit, data: random_label_plan(edit, data.num_classes, int(cfg.seed)),
        uses_mask=False,
        family="unlearning",
        keys=("epochs", "published_train_epochs", "lr_factor"),
        validate=validate,
    )
)
