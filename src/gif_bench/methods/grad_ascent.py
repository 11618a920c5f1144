"""Gradient ascent on U (GA; on ℓ(z) − ℓ(z′) for a relabelling); SalUn's recipe: 5 epochs at
0.001 × the training learning rate."""

from ..registry import METHODS
from ..unlearning import grad_ascent_plan, unlearner

METHODS.register(unlearner("grad_ascent", "Gradient ascent", lambda cfg, model, edit, data: grad_ascent_plan(edit)))
