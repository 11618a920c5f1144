"""SCRUB (Kurmanji et al. 2023, "Towards Unbounded Machine Unlearning"): the model before the
edit teaches a student (the model being edited) to stay close on the retained data and to move
away on U: max-steps ascend ``KL(teacher ‖ student)`` on U, min-steps descend
``γ ℓ + α KL(teacher ‖ student)`` on R. The authors' CIFAR-10 class-forgetting recipe: 3
epochs, max-steps in the first 2, lr 5·10⁻⁴ (0.005 × a training lr of 0.1), temperature 4,
α = 0.001, γ = 0.99, U's batches of 512."""

from __future__ import annotations

from dataclasses import dataclass

from .. import unlearning
from ..space import Interval, IntRange
from ..unlearning import scrub_plan
from .spec import unlearner


@dataclass(frozen=True)
class Options(unlearning.Options):
    """The recipe's options and SCRUB's: the epochs with a max-step (``max_steps``), the weights
    ``alpha`` (KL on R) and ``gamma`` (ℓ on R), the distillation ``temperature`` and U's batch
    size (``forget_batch``)."""

    max_steps: int
    alpha: float
    gamma: float
    temperature: float
    forget_batch: int


def plan(run, model, edit, data):
    o: Options = run.method.options
    return scrub_plan(
        model,
        edit,
        max_steps=o.max_steps,
        alpha=o.alpha,
        gamma=o.gamma,
        temperature=o.temperature,
        forget_batch=o.forget_batch,
    )


SPEC = unlearner(
    "scrub",
    "SCRUB",
    plan,
    keys=("max_steps", "alpha", "gamma", "temperature", "forget_batch"),
    options=Options,
    search={"method.max_steps": IntRange(0, 3), "method.alpha": Interval(1e-4, 1.0, log=True)},  # published 2, 0.001
)
