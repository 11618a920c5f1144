"""Random labels (RL): U relabelled at random, trained together with R; SalUn's recipe: 10
epochs at 0.13 × the training learning rate."""

from ..unlearning import random_label_plan
from .spec import unlearner


def plan(run, model, edit, data):
    return random_label_plan(edit, data.num_classes, run.seed)


SPEC = unlearner("random_label", "Random labels", plan)
