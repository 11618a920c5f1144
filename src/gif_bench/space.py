"""Search spaces: the settings a method's tuning may change, and the ranges it may try.

A method declares its space beside its code (``MethodSpec.search``): a mapping from a config key
(``update.rate``, ``mr``, ``method.lr_factor``, …) to an :class:`Interval` (uniform, or
uniform in log) or an :class:`IntRange`, or to a plain value that every trial holds fixed (the unlearners' unscaled
epochs). :func:`override` writes one entry as the Hydra override Hydra's Optuna sweeper samples
from (``tag(log, interval(0.01, 1.0))``, ``int(interval(1, 10))``); :func:`values_of` reads a
trial's chosen values back from its overrides.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class Interval:
    """A float drawn uniformly between ``lo`` and ``hi``; with ``log``, uniformly in log (both > 0)."""

    lo: float
    hi: float
    log: bool = False

    def hydra(self) -> str:
        interval = f"interval({self.lo!r}, {self.hi!r})"
        return f"tag(log, {interval})" if self.log else interval


@dataclass(frozen=True)
class IntRange:
    """An integer drawn uniformly from ``lo`` to ``hi``, both included."""

    lo: int
    hi: int

    def hydra(self) -> str:
        return f"int(interval({self.lo}, {self.hi}))"


Dimension = Interval | IntRange
Space = Mapping[str, "Dimension | bool | int | float | str"]


def is_searched(value: object) -> bool:
    """Whether a space's entry is searched (a :data:`Dimension`) rather than held fixed."""
    return isinstance(value, Interval | IntRange)


def override(key: str, value: object) -> str:
    """The Hydra override for one entry of a space: its distribution for Optuna's sweeper, or
    ``key=value`` for a fixed entry."""
    if is_searched(value):
        return f"{key}={value.hydra()}"  # type: ignore[union-attr]
    if isinstance(value, bool):
        return f"{key}={str(value).lower()}"
    return f"{key}={value}"


def searched(space: Space, held: set[str] = frozenset()) -> dict[str, object]:
    """The entries of ``space`` a tuning run searches: its dimensions, less the keys in ``held``
    (those an experiment's grid fixes, such as table 1's MRs)."""
    return {k: v for k, v in space.items() if is_searched(v) and k not in held}


def fixed(space: Space) -> dict[str, object]:
    """The entries of ``space`` every trial holds fixed."""
    return {k: v for k, v in space.items() if not is_searched(v)}
