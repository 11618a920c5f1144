"""A registry: the named entries of one concept (methods, tasks, selectors, datasets, models), in
registration order, the order tables and plots use.

Each concept's entry type and its registry live beside the concept's code (``methods/spec.py``,
``tasks/spec.py``, ``selectors.py``, ``data.py``, ``models.py``); the built-in entries are
registered explicitly when their package is imported, and a user's module registers its own
with :meth:`Registry.register`. Validation, canonicalisation, the runner, tables and plots
iterate the registries; no other module lists names.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

Validator = Callable[[Any], None]  # given the whole run config, raises ConfigError on a bad value


def no_checks(cfg: Any) -> None:
    return None


T = TypeVar("T")


@dataclass
class Registry(Generic[T]):
    """Named entries of one concept (each with a ``name``), in registration order."""

    concept: str
    _entries: dict[str, T] = field(default_factory=dict)

    def register(self, entry: T) -> T:
        """Add ``entry`` under its ``name``; a second entry of the same name replaces the first."""
        self._entries[entry.name] = entry  # type: ignore[attr-defined]
        return entry

    def unregister(self, name: str) -> None:
        self._entries.pop(name, None)

    def __getitem__(self, name: str) -> T:
        if name not in self._entries:
            raise KeyError(f"{self.concept}={name} is not one of {', '.join(self._entries)}")
        return self._entries[name]

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(list(self._entries))

    def __len__(self) -> int:
        return len(self._entries)

    def values(self) -> list[T]:
        return list(self._entries.values())
