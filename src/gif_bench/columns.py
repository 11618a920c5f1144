"""A table column: the unit tasks, the oracle's measures and the cost fields describe their
figures in (tables and plots read the direction)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Column:
    """A table column: a metric and whether higher (``max``) or lower (``min``) is better
    (``None``: neither, e.g. U's accuracy where the target is the retrained model's)."""

    metric: str
    better: str | None
