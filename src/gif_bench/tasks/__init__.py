"""Editing tasks: which training examples an update removes or corrects, and how it is judged.

Each module defines one :class:`~gif_bench.tasks.spec.TaskSpec` (``SPEC``): its :class:`Edit`
builder, its metrics, its table columns and its validation. They are registered in
:data:`TASKS` here, in the order of listings.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..data import Data
from ..edit import Edit
from ..settings import Component
from . import backdoor, class_removal, label_change, random_removal
from .backdoor import add_trigger, checkerboard, corner_patch, poison
from .label_change import relabel
from .spec import TASKS, TaskSpec

for _spec in (class_removal.SPEC, label_change.SPEC, backdoor.SPEC, random_removal.SPEC):
    TASKS.register(_spec)

__all__ = ["TASKS", "Edit", "TaskSpec", "add_trigger", "backdoor", "build", "checkerboard", "class_removal"]
__all__ += ["corner_patch", "label_change", "poison", "random_removal", "relabel", "settings"]


def settings(values: Mapping[str, Any]) -> Component:
    """A task's config node (plain, resolved) as its name and typed options."""
    return Component.of(TASKS[str(values["name"])], values)


def build(task: Component, data: Data) -> Edit:
    """The :class:`Edit` of ``task`` (its name and options, :func:`settings`) on ``data``."""
    return TASKS[task.name].build(task.options, data)
