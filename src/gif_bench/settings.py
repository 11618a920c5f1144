"""Typed settings: what the domain code reads of a run's config, as frozen dataclasses built
from plain mappings where the config is turned into them (``config.py``), so that the code
below them takes typed values, not Hydra's config objects.

So far: the training recipe (:class:`Recipe`), read by :func:`gif_bench.train.fit` and derived
by the unlearners (:func:`gif_bench.unlearning.recipe`); the logger (:class:`Logger`), read by
:mod:`gif_bench.tracking`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from typing import Any

SCHEDULES = ("cosine", "multistep", "constant")
OPTIMIZERS = ("sgd",)


@dataclass(frozen=True)
class Recipe:
    """A training recipe (``conf/train/*.yaml``): SGD with momentum and weight decay, a learning
    rate schedule over ``epochs`` (``cosine`` to 0, ``multistep`` ×``gamma`` at each of
    ``milestones``, or ``constant``), random crops and flips when ``augment``, bf16 autocast on
    CUDA when ``amp``. ``optimizer`` is SGD's name, the one optimizer the harness has."""

    name: str
    lr: float
    momentum: float
    weight_decay: float
    batch_size: int
    epochs: int
    schedule: str
    augment: bool = False
    drop_last: bool = False
    amp: bool = False
    milestones: tuple[int, ...] = ()
    gamma: float = 0.1
    nesterov: bool = False
    optimizer: str = "sgd"

    @classmethod
    def of(cls, values: Mapping[str, Any]) -> Recipe:
        """The recipe of a config's ``train`` node, as a plain mapping (keys it does not know
        are left out)."""
        known = {f.name for f in fields(cls)}
        kept = {k: v for k, v in values.items() if k in known}
        for key, kind in (("lr", float), ("momentum", float), ("weight_decay", float), ("gamma", float)):
            if key in kept:
                kept[key] = kind(kept[key])
        for key in ("batch_size", "epochs"):
            if key in kept:
                kept[key] = int(kept[key])
        for key in ("augment", "drop_last", "amp", "nesterov"):
            if key in kept:
                kept[key] = bool(kept[key])
        kept["milestones"] = tuple(int(m) for m in kept.get("milestones") or ())
        return cls(**kept)

    def but(self, **changes: Any) -> Recipe:
        """This recipe with ``changes`` (a derived recipe, e.g. an unlearner's)."""
        return replace(self, **changes)


@dataclass(frozen=True)
class Logger:
    """Where a run is mirrored (``conf/logger/*.yaml``): ``wandb`` (its ``mode``: offline, online
    or disabled; ``project``, ``entity`` and ``tags``) or ``none``."""

    name: str
    mode: str = "offline"
    project: str = "gif-bench"
    entity: str | None = None
    tags: tuple[str, ...] = ()

    @classmethod
    def of(cls, values: Mapping[str, Any]) -> Logger:
        known = {f.name for f in fields(cls)}
        kept = {k: v for k, v in values.items() if k in known}
        kept["tags"] = tuple(str(t) for t in kept.get("tags") or ())
        return cls(**kept)

    @property
    def mirrors(self) -> bool:
        """Whether runs are mirrored to W&B at all."""
        return self.name == "wandb" and self.mode != "disabled"
