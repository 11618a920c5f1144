"""Typed settings: what the code below the command line reads of a run's config, as frozen
dataclasses, built where Hydra's config is checked and turned into them
(:func:`gif_bench.config.settle`), so that nothing below takes Hydra's config objects.

:class:`Run` holds one run's settings: its seed, MR and device, and one dataclass per config
group: :class:`Dataset`, :class:`Model`, the task and the method (:class:`Component`: a name and
the options dataclass its registry entry declares), :class:`Selector`, :class:`Solver`,
:class:`Hessian`, :class:`Update`, the training :class:`Recipe` and the :class:`Logger`.
:func:`typed` builds a dataclass from a config node given as plain containers.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from types import MappingProxyType, UnionType
from typing import Any, Union, get_args, get_origin, get_type_hints

import torch

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


def typed(cls: type, values: Mapping[str, Any]):
    """An instance of the frozen dataclass ``cls`` from a config node as a plain mapping: each
    field's value converted to its annotated type (``int``, ``float``, ``bool``, ``str``, a tuple,
    or ``None`` where the annotation allows it); keys ``cls`` does not have are left out, fields
    the mapping lacks keep their defaults."""
    hints = get_type_hints(cls)
    kept = {}
    for f in fields(cls):
        if f.name in values:
            kept[f.name] = _convert(values[f.name], hints[f.name])
    return cls(**kept)


def _convert(value: Any, hint: Any) -> Any:
    args = [a for a in get_args(hint) if a is not type(None)]
    if value is None:
        return None
    origin = get_origin(hint)
    if origin in (Union, UnionType):
        return _convert(value, args[0]) if len(args) == 1 else value
    if origin is tuple:
        return tuple(_convert(v, args[0]) for v in value) if args else tuple(value)
    if hint in (int, float, str, bool):
        return hint(value)
    if origin in (Mapping, dict) or hint is Mapping:
        return MappingProxyType(dict(value))
    return value


@dataclass(frozen=True)
class Paths:
    """Where a run writes (``root``: results, runs, W&B), keeps trained models (``cache``) and
    finds datasets (``data``)."""

    root: str
    cache: str
    data: str


@dataclass(frozen=True)
class Dataset:
    """A dataset (``conf/dataset/*.yaml``): its images' shape and classes, the seeded splits
    (``val_fraction`` of the training images; ``test_fraction`` of all images where the dataset
    has no test set of its own), the normalisation, the augmentation the recipe may apply, and
    the keys of single datasets (``system_dir``: fashion_mnist's Debian folder; ``num_samples``
    and ``noise``: synthetic's)."""

    name: str
    num_classes: int
    in_channels: int
    image_size: int
    split_seed: int
    val_fraction: float
    test_fraction: float = 0.0
    mean: tuple[float, ...] = ()
    std: tuple[float, ...] = ()
    hflip: bool = False
    crop_padding: int = 0
    system_dir: str | None = None
    num_samples: int | None = None
    noise: float | None = None

    @classmethod
    def of(cls, values: Mapping[str, Any]) -> Dataset:
        augment = values.get("augment") or {}
        return typed(cls, {**values, **{k: augment[k] for k in ("hflip", "crop_padding") if k in augment}})


@dataclass(frozen=True)
class Model:
    """A network (``conf/model/*.yaml``): its ``width`` multiplier, or an MLP's ``hidden`` sizes."""

    name: str
    width: float | None = None
    hidden: tuple[int, ...] = ()


@dataclass(frozen=True)
class Component:
    """A registered component chosen by ``name`` (a task, a method) and its own options: the
    frozen dataclass its registry entry declares (``options``), built from its config node."""

    name: str
    options: Any = None

    @classmethod
    def of(cls, entry: Any, values: Mapping[str, Any]) -> Component:
        """A registry ``entry``'s config node (plain, resolved) as its name and its ``options``
        dataclass (None for an entry without one)."""
        return cls(entry.name, typed(entry.options, values) if entry.options is not None else None)


@dataclass(frozen=True)
class Selector:
    """The selector of J (``conf/selector/*.yaml``) and the size of its sample of U."""

    name: str
    samples: int


@dataclass(frozen=True)
class Solver:
    """The solver (``conf/solver/*.yaml``) and its options as they reach
    :func:`gif_bench.influence.solve` (everything but the name)."""

    name: str
    options: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))

    @classmethod
    def of(cls, values: Mapping[str, Any]) -> Solver:
        return cls(str(values["name"]), MappingProxyType({k: v for k, v in values.items() if k != "name"}))


@dataclass(frozen=True)
class Hessian:
    """The Newton Hessian's fixed sample of retained examples and how its products are formed."""

    samples: int
    product: str


@dataclass(frozen=True)
class Update:
    """The line search along Δθ (``update:`` in ``conf/config.yaml``, where each key is described)."""

    rate: float
    max_steps: int
    max_val_drop: float
    recompute_every: int | None = None
    stall_boost: float | None = None
    stall_patience: int = 10
    search: str = "linear"
    eval_every: int = 10


@dataclass(frozen=True)
class Run:
    """One run's settings, typed: what the domain code, the pipeline and the runner read.

    ``fingerprint`` is the resolved config as plain containers (read, never written), which the
    cache keys hash parts of and W&B records, as they did before these settings existed, so that
    they stay the same; ``run_id`` is the hash of the config that names the run's row
    (:func:`gif_bench.config.run_id`); ``study`` is the solver study's node
    (``experiment=solver_study``), or None. ``tune`` names the tuning study this run is a trial
    of (None for a run: :mod:`gif_bench.tuning`); ``tuning`` is the record a tuned recipe keeps of
    the study that chose it (its trials, seconds and objective), None for a published recipe.
    """

    name: str
    seed: int
    mr: float
    device: str
    force: bool
    save_edited: bool
    paths: Paths
    dataset: Dataset
    model: Model
    task: Component
    selector: Selector
    method: Component
    solver: Solver
    hessian: Hessian
    update: Update
    train: Recipe
    logger: Logger
    scale_epochs: bool = False
    study: Mapping[str, Any] | None = None
    tune: str | None = None
    tuning: Mapping[str, Any] | None = None
    fingerprint: Mapping[str, Any] = field(default_factory=dict)
    run_id: str = ""

    def but(self, **changes: Any) -> Run:
        """These settings with ``changes`` (e.g. another solver for a reference solve)."""
        return replace(self, **changes)


def resolve_device(spec: str) -> torch.device:
    """``auto`` → cuda if available, else mps, else cpu; anything else as given."""
    if spec == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    return torch.device(spec)
