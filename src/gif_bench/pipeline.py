"""The steps every run and every script shares, in one place: from a run's typed settings
(:class:`~gif_bench.settings.Run`) to the data, the edit, the network, the trained model and the
oracle retrained without U.

``record.record`` records a row from them; ``scripts/`` (bench, preconditioner_bound,
learning_curve) call the same functions instead of assembling the steps again.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from . import data as datasets
from . import influence, models, tasks, train
from .edit import Edit
from .errors import ConfigError, WithheldData
from .influence.methods import EXACT_MAX_PARAMS
from .settings import Run, resolve_device


@dataclass
class Prepared:
    """A run's inputs before training: the device, the dataset, the task's edit and the network
    at its seeded initialisation (``run.seed``)."""

    run: Run
    device: torch.device
    dataset: datasets.Data
    edit: Edit
    model: nn.Module

    def network(self) -> nn.Module:
        """A fresh network of the run's architecture at the seeded initialisation."""
        return network(self.run, self.dataset, self.device)


def network(run: Run, dataset: datasets.Data, device: torch.device | str) -> nn.Module:
    """``run.model`` for ``dataset``'s images and classes, initialised from ``run.seed``."""
    torch.manual_seed(run.seed)
    return models.build(run.model, dataset.in_channels, dataset.num_classes, run.dataset.image_size).to(device)


def prepare(run: Run, device: torch.device | str | None = None) -> Prepared:
    """Load the data (once per process), build the task's edit and the seeded network, and
    refuse, before any training, what the network makes impossible (:func:`check_fits`)."""
    device = resolve_device(run.device) if device is None else torch.device(device)
    dataset = datasets.load(run.dataset, run.paths.data, device)
    edit = tasks.build(run.task, dataset)
    model = network(run, dataset, device)
    check_fits(run, model)
    return Prepared(run, device, dataset, edit, model)


def check_fits(run: Run, model: nn.Module) -> None:
    """The checks that need the network: the exact solver's size limit, and an MR that selects
    at least one parameter."""
    if run.solver.name == "exact" and models.n_params(model) > EXACT_MAX_PARAMS:
        raise ConfigError(
            "solver=exact",
            f"needs a model of at most {EXACT_MAX_PARAMS:,} parameters; this one has "
            f"{models.n_params(model):,} (use solver=cg or solver=lissa)",
        )
    budget = sum(influence.layer_budget(m, run.mr) for m in influence.selectable_layers(model).values())
    if run.selector.name != "all" and budget == 0:
        raise ConfigError(f"mr={run.mr}", "selects no parameter in any layer of this model; raise mr")


def trained(prepared: Prepared) -> train.Trained:
    """The model trained on the edit's training set (loaded from the cache when it is there);
    trains ``prepared.model`` in place."""
    p = prepared
    return train.train_or_load(p.run, p.model, p.dataset, p.edit.train_set, p.device, Path(p.run.paths.cache))


TRAININGS = ("model", "oracle")  # what a run trains: the model it edits, and the oracle


def trainings(prepared: Prepared) -> dict[str, Path]:
    """The cache files of the trainings ``prepared``'s run needs, by :data:`TRAININGS` name: the
    model on the edit's training set and, unless the run is a tuning trial (which never sees
    it), the oracle on the edited one. A sweep's runs share them (one per seed and setting)."""
    p = prepared
    sets = {"model": p.edit.train_set, **({} if p.run.tune else {"oracle": p.edit.retrain_set()})}
    return {which: train.cache_path(p.run, split, Path(p.run.paths.cache)) for which, split in sets.items()}


def train_one(run: Run, which: str) -> train.Trained:
    """Train (or load) one of :func:`trainings`: ``"model"`` or ``"oracle"``, as the run would."""
    if which not in TRAININGS:
        raise ValueError(f"which={which!r} is not one of {', '.join(TRAININGS)}")
    prepared = prepare(run)
    return trained(prepared) if which == "model" else retrained(prepared)


def retrained(prepared: Prepared) -> train.Trained:
    """The oracle: a fresh network retrained from scratch on the edited training set, with the
    original's recipe and seed. Cached by the training set's content, so every method, selector
    and MR of one setting shares it. Withheld from a tuning trial (:mod:`gif_bench.tuning`)."""
    p = prepared
    if p.run.tune:
        raise WithheldData("the oracle (the model retrained without U) is withheld while tuning")
    fresh = p.network()
    return train.train_or_load(p.run, fresh, p.dataset, p.edit.retrain_set(), p.device, Path(p.run.paths.cache))
