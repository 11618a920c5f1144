"""Gradient ascent on U (GA; on ℓ(z) − ℓ(z′) for a relabelling); SalUn's recipe: 5 epochs at
0.001 × the training learning rate."""

from ..unlearning import grad_ascent_plan
from .spec import unlearner

SPEC = unlearner("grad_ascent", "Gradient ascent", lambda run, model, edit, data: grad_ascent_plan(edit))
