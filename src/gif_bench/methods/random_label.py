"""Random labels (RL): U relabelled at random, trained together with R; SalUn's recipe: 10
epochs at 0.13 × the training learning rate."""

from ..registry import METHODS
from ..unlearning import random_label_plan, unlearner


def plan(cfg, model, edit, data):
    return random_label_plan(edit, data.num_classes, int(cfg.seed))


METHODS.register(unlearner("random_label", "Random labels", plan))
