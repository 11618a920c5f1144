"""One registry per concept: methods, tasks, selectors, datasets and models.

Each entry is a small typed object holding everything the harness asks about its concept: its
label in tables, its capabilities, its metrics, its validation and how it runs. Validation,
canonicalisation, the runner, tables and plots iterate these registries; no other module
lists names. The built-in entries register themselves when their package is imported, which
the registry does on first use, so adding one is a module that calls ``register`` plus a
config file (``conf/<group>/<name>.yaml``) with the same ``name``.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from omegaconf import DictConfig

if TYPE_CHECKING:
    from torch import Tensor, nn

    from .data import Data
    from .editing import Problem
    from .influence import SolveInfo
    from .tasks import Edit
    from .unlearning import Plan

Validator = Callable[[DictConfig], None]  # raises ConfigError on a bad value of the whole config


def _no_checks(cfg: DictConfig) -> None:
    return None


@dataclass(frozen=True)
class MethodSpec:
    """An update method.

    ``direction`` computes Δθ (and the solve's diagnostics) from the edit's :class:`Problem`;
    the oracle (``oracle=True``, retraining from scratch) has none: its row is the retrained
    model's. ``uses_mask=False`` means the update changes every parameter whatever the selector
    chose, so its runs are canonicalised to ``mr=1``, selector ``all``. ``hessian_sample`` says
    which training examples the Hessian sample is drawn from: ``retained`` (R) or ``all``.
    ``keys`` are the method's own config keys (dropped from any other method's config, so that
    a sweep over methods passing one of them runs every other method once).

    A fine-tuning unlearner has ``unlearn`` instead of ``direction``: ``unlearn(cfg, model,
    edit, data)`` returns the :class:`~gif_bench.unlearning.Plan` that
    :func:`~gif_bench.unlearning.unlearn` trains. ``family`` groups methods in tables and
    comparisons: ``paper`` (the paper's lineup, compared in its order), ``influence`` (other
    influence estimators) or ``unlearning`` (fine-tuning unlearners).
    """

    name: str
    label: str
    direction: Callable[[DictConfig, Problem], tuple[dict[str, Tensor], SolveInfo]] | None = None
    uses_mask: bool = True
    hessian_sample: str = "retained"
    oracle: bool = False
    keys: tuple[str, ...] = ()
    validate: Validator = _no_checks
    unlearn: Callable[[DictConfig, nn.Module, Edit, Data], Plan] | None = None
    family: str = "paper"


@dataclass(frozen=True)
class Column:
    """A table column: a metric and whether higher (``max``) or lower (``min``) is better
    (``None``: neither, e.g. U's accuracy where the target is the retrained model's)."""

    metric: str
    better: str | None


def below_stop_self_acc(metrics: dict[str, float], task: DictConfig) -> bool:
    """The default stop rule: U's accuracy below ``task.stop_self_acc`` (%)."""
    return metrics["self_acc"] < float(task.stop_self_acc)


def validation_f1(metrics: dict[str, float]) -> tuple[float, float]:
    """The default best-iterate score: F1 of validation accuracy against forgetting U, then the
    validation accuracy. F1 is 0 at every step while U is still fully recognised; the second
    key then prefers the iterate that has damaged the model least, instead of whichever came
    first."""
    return metrics["val_f1"], metrics["val_acc"]


COMMON_TRAJECTORY = ("step", "self_acc", "test_acc", "val_acc")


@dataclass(frozen=True)
class TaskSpec:
    """An edit task: which examples the update removes or corrects, and how it is judged.

    ``build`` turns the dataset into an :class:`~gif_bench.tasks.Edit`; ``metrics(model, edit,
    only=None)`` evaluates a model on it (every key of ``reported``; with ``only``, on those
    evaluation sets alone, the others' metrics NaN); ``reported`` are the metrics a row carries for
    every model it describes (final, ``best_``, ``before_``, ``retrain_``); ``columns`` the
    table's, in order; ``gap_keys`` those averaged by ``gap_to_retrain``; ``trajectory`` the
    per-step fields a row keeps. The update loop stops at the first step where
    ``stop(metrics, cfg.task)`` holds, and the best iterate is the one of highest
    ``score(metrics)``; neither may read the test split or the oracle. ``decides_on`` are the
    evaluation sets that the stop rule, the score and the collapse check (validation accuracy)
    read: the line search evaluates every iterate on these alone (:mod:`gif_bench.line_search`;
    tests/test_line_search.py checks each task's rules against them).
    """

    name: str
    label: str
    build: Callable[[DictConfig, Data], Edit]
    metrics: Callable[..., dict[str, float]]
    reported: tuple[str, ...]
    columns: tuple[Column, ...]
    gap_keys: tuple[str, ...]
    trajectory: tuple[str, ...] = COMMON_TRAJECTORY
    validate: Validator = _no_checks
    stop: Callable[[dict[str, float], DictConfig], bool] = below_stop_self_acc
    score: Callable[[dict[str, float]], Any] = validation_f1
    decides_on: tuple[str, ...] = ("self", "val")


@dataclass(frozen=True)
class SelectorSpec:
    """A parameter selector of :func:`gif_bench.influence.select`; ``label`` names its line
    in the selector study (``None``: not a selector the study compares, e.g. ``all``);
    ``uses_fisher``: it scores with the empirical Fisher's diagonal on the Hessian sample."""

    name: str
    label: str | None
    uses_fisher: bool = False


@dataclass(frozen=True)
class DatasetSpec:
    """A dataset: ``load(cfg, data_dir, seed)`` returns ``(x_train, y_train, x_test, y_test)``
    (images as N×C×H×W float tensors in [0, 1], labels as integer arrays)."""

    name: str
    load: Callable[..., tuple[Any, Any, Any, Any]]
    validate: Validator = _no_checks


@dataclass(frozen=True)
class ModelSpec:
    """A network: ``build(cfg, in_channels, num_classes, image_size)`` returns the module."""

    name: str
    build: Callable[[DictConfig, int, int, int], nn.Module]
    validate: Validator = _no_checks


T = TypeVar("T")


@dataclass
class Registry(Generic[T]):
    """Named entries of one concept, in registration order (the order tables and plots use).

    ``package`` is imported on first use: its modules register the built-in entries.
    """

    concept: str
    package: str
    _entries: dict[str, T] = field(default_factory=dict)
    _loaded: bool = False

    def _load(self) -> None:
        if not self._loaded:
            self._loaded = True
            importlib.import_module(self.package)

    def register(self, entry: T) -> T:
        """Add ``entry`` under its ``name``; a second entry of the same name replaces the first."""
        self._load()  # the built-in entries first, whoever registers first
        self._entries[entry.name] = entry  # type: ignore[attr-defined]
        return entry

    def unregister(self, name: str) -> None:
        self._entries.pop(name, None)

    def __getitem__(self, name: str) -> T:
        self._load()
        if name not in self._entries:
            raise KeyError(f"{self.concept}={name} is not one of {', '.join(self._entries)}")
        return self._entries[name]

    def __contains__(self, name: object) -> bool:
        self._load()
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        self._load()
        return iter(list(self._entries))

    def __len__(self) -> int:
        self._load()
        return len(self._entries)

    def values(self) -> list[T]:
        self._load()
        return list(self._entries.values())


METHODS: Registry[MethodSpec] = Registry("method", "gif_bench.methods")
TASKS: Registry[TaskSpec] = Registry("task", "gif_bench.tasks")
SELECTORS: Registry[SelectorSpec] = Registry("selector", "gif_bench.selectors")
DATASETS: Registry[DatasetSpec] = Registry("dataset", "gif_bench.data")
MODELS: Registry[ModelSpec] = Registry("model", "gif_bench.models")
