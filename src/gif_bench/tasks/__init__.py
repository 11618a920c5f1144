"""Editing tasks: which training examples an update removes or corrects, and how it is judged.

Each module registers one :class:`~gif_bench.registry.TaskSpec`: its :class:`Edit` builder,
its metrics, its table columns and its validation. The order of registration here is the
order of listings.
"""
# isort: skip_file

from __future__ import annotations

from omegaconf import DictConfig

from ..data import Data
from ..registry import TASKS
from .edit import Edit
from . import class_removal
from . import label_change
from . import backdoor
from . import random_removal
from .backdoor import add_trigger, checkerboard, corner_patch, poison
from .label_change import relabel

__all__ = ["Edit", "add_trigger", "backdoor", "build", "checkerboard", "class_removal", "corner_patch"]
__all__ += ["label_change", "poison", "random_removal", "relabel"]


def build(cfg: DictConfig, data: Data) -> Edit:
    """The :class:`Edit` of task ``cfg.name`` on ``data``."""
    return TASKS[cfg.name].build(cfg, data)
