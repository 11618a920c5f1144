"""The steps every run and every script shares, in one place: from a validated config to the
data, the edit, the network, the trained model and the oracle retrained without U.

``runner.run`` records a row from them; ``scripts/`` (bench, preconditioner_bound,
learning_curve) call the same functions instead of assembling the steps again.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from omegaconf import DictConfig
from torch import nn

from . import data as datasets
from . import influence, models, tasks, train
from .config import resolve_device
from .edit import Edit
from .errors import ConfigError
from .influence.methods import EXACT_MAX_PARAMS


@dataclass
class Prepared:
    """A run's inputs before training: the device, the dataset, the task's edit and the network
    at its seeded initialisation (``cfg.seed``)."""

    cfg: DictConfig
    device: torch.device
    dataset: datasets.Data
    edit: Edit
    model: nn.Module

    def network(self) -> nn.Module:
        """A fresh network of the run's architecture at the seeded initialisation."""
        return network(self.cfg, self.dataset, self.device)


def network(cfg: DictConfig, dataset: datasets.Data, device: torch.device | str) -> nn.Module:
    """``cfg.model`` for ``dataset``'s images and classes, initialised from ``cfg.seed``."""
    torch.manual_seed(int(cfg.seed))
    return models.build(cfg.model, dataset.in_channels, dataset.num_classes, cfg.dataset.image_size).to(device)


def prepare(cfg: DictConfig, device: torch.device | str | None = None) -> Prepared:
    """Load the data (once per process), build the task's edit and the seeded network, and
    refuse, before any training, what the network makes impossible (:func:`check_fits`)."""
    device = resolve_device(cfg.device) if device is None else torch.device(device)
    dataset = datasets.load(cfg.dataset, cfg.paths.data, device)
    edit = tasks.build(cfg.task, dataset)
    model = network(cfg, dataset, device)
    check_fits(cfg, model)
    return Prepared(cfg, device, dataset, edit, model)


def check_fits(cfg: DictConfig, model: nn.Module) -> None:
    """The checks that need the network: the exact solver's size limit, and an MR that selects
    at least one parameter."""
    if cfg.solver.name == "exact" and models.n_params(model) > EXACT_MAX_PARAMS:
        raise ConfigError(
            "solver=exact",
            f"needs a model of at most {EXACT_MAX_PARAMS:,} parameters; this one has "
            f"{models.n_params(model):,} (use solver=cg or solver=lissa)",
        )
    budget = sum(influence.layer_budget(m, float(cfg.mr)) for m in influence.selectable_layers(model).values())
    if cfg.selector.name != "all" and budget == 0:
        raise ConfigError(f"mr={cfg.mr}", "selects no parameter in any layer of this model; raise mr")


def trained(prepared: Prepared) -> train.Trained:
    """The model trained on the edit's training set (loaded from the cache when it is there);
    trains ``prepared.model`` in place."""
    p = prepared
    return train.train_or_load(p.cfg, p.model, p.dataset, p.edit.train_set, p.device, Path(p.cfg.paths.cache))


def retrained(prepared: Prepared) -> train.Trained:
    """The oracle: a fresh network retrained from scratch on the edited training set, with the
    original's recipe and seed. Cached by the training set's content, so every method, selector
    and MR of one setting shares it."""
    p = prepared
    fresh = p.network()
    return train.train_or_load(p.cfg, fresh, p.dataset, p.edit.retrain_set(), p.device, Path(p.cfg.paths.cache))
