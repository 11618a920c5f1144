"""Validation of the composed config, run before any data is read or anything is written.

Every check raises :class:`~gif_bench.errors.ConfigError` naming the key, the value given and
what is allowed, e.g. ``mr=1.5: must be a number in (0, 1]``.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import torch
from omegaconf import DictConfig, open_dict

from .checks import choice, get, is_number, number
from .data import DATASETS
from .errors import ConfigError
from .influence import LINEAR_METHODS, SOLVERS
from .influence.hvp import MODES as HVP_MODES
from .influence.methods import PRECONDITIONERS
from .influence.solvers import DIVERGENCE_RULES, STOPS
from .line_search import SEARCHES
from .methods import METHODS
from .models import MODELS
from .selectors import SELECTORS
from .settings import OPTIMIZERS, SCHEDULES
from .tasks import TASKS

LOGGERS = ("wandb", "none")
WANDB_MODES = ("offline", "online", "disabled")
DEVICE_PATTERN = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")


def resolve_device(spec: str) -> torch.device:
    """``auto`` → cuda if available, else mps, else cpu; anything else as given."""
    if spec == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    return torch.device(spec)


def _device(cfg) -> None:
    spec = get(cfg, "device")
    if not isinstance(spec, str) or not DEVICE_PATTERN.match(spec):
        raise ConfigError(f"device={spec}", "must be auto, cpu, cuda, cuda:N or mps")
    if spec.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ConfigError(f"device={spec}", "CUDA is not available on this machine; use device=cpu or device=auto")
        index = int(spec.split(":")[1]) if ":" in spec else 0
        if index >= torch.cuda.device_count():
            raise ConfigError(f"device={spec}", f"this machine has {torch.cuda.device_count()} CUDA device(s)")
    if spec == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise ConfigError(f"device={spec}", "MPS is not available on this machine; use device=cpu or device=auto")


def _writable_folder(cfg: DictConfig, key: str) -> None:
    """``key`` names a folder that exists or can be made: its nearest existing ancestor is a
    writable folder. Nothing is created here."""
    path = Path(str(get(cfg, key))).absolute()
    existing = next(p for p in (path, *path.parents) if p.exists())
    if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        raise ConfigError(f"{key}={get(cfg, key)}", f"must be a folder this user can write ({existing} is not)")


def validate(cfg: DictConfig) -> None:
    """Check every user-facing value of ``cfg``; raise :class:`ConfigError` on the first bad one.

    The common keys are checked here, each component's own keys by its registry entry.
    """
    number(cfg, "mr", 0.0, 1.0, lo_open=True)
    number(cfg, "seed", 0, integer=True)
    _device(cfg)
    for key in ("force", "save_edited"):
        if not isinstance(get(cfg, key), bool):
            raise ConfigError(f"{key}={get(cfg, key)}", "must be true or false")

    for key in ("paths.root", "paths.cache"):
        _writable_folder(cfg, key)

    DATASETS[choice(cfg, "dataset.name", DATASETS)].validate(cfg)
    number(cfg, "dataset.num_classes", 2, integer=True)
    number(cfg, "dataset.val_fraction", 0.0, 1.0, lo_open=True)
    MODELS[choice(cfg, "model.name", MODELS)].validate(cfg)

    task = TASKS[choice(cfg, "task.name", TASKS)]
    task.validate(cfg)

    choice(cfg, "selector.name", SELECTORS)
    number(cfg, "selector.samples", 1, integer=True)
    METHODS[choice(cfg, "method.name", METHODS)].validate(cfg)
    choice(cfg, "solver.name", SOLVERS)
    solver_name = get(cfg, "solver.name")
    if solver_name in SOLVERS and SOLVERS[solver_name].lissa:
        number(cfg, "solver.max_iter", 1, integer=True)
        number(cfg, "solver.tol", 0.0)
        choice(cfg, "solver.growth", ("multiply", "add"))
        number(cfg, "solver.mu", 0.0 if get(cfg, "solver.growth") == "add" else 1.0, lo_open=True)
        number(cfg, "solver.max_restarts", 0, integer=True)
        choice(cfg, "solver.stop", STOPS)
        choice(cfg, "solver.divergence", DIVERGENCE_RULES)
        if get(cfg, "solver.scale") != "auto":
            number(cfg, "solver.scale", 0.0, lo_open=True)
    if "damping" in (get(cfg, "solver") or {}):
        number(cfg, "solver.damping", 0.0)
        if solver_name == "minres" and get(cfg, "solver.damping"):
            raise ConfigError(
                f"solver.damping={get(cfg, 'solver.damping')}",
                "must be 0 with solver=minres, which solves K x = r itself; use cg for damping",
            )
    if get(cfg, "solver.name") in ("cg", "lsqr", "minres"):
        number(cfg, "solver.max_iter", 1, integer=True)
        number(cfg, "solver.tol", 0.0)
        if not isinstance(get(cfg, "solver.reorthogonalize"), bool):
            raise ConfigError(f"solver.reorthogonalize={get(cfg, 'solver.reorthogonalize')}", "must be true or false")
    if get(cfg, "solver.name") == "cg" and get(cfg, "solver.preconditioner") is not None:
        if get(cfg, "solver.preconditioner") not in PRECONDITIONERS:
            named = ", ".join(p for p in PRECONDITIONERS if p is not None)
            raise ConfigError(f"solver.preconditioner={get(cfg, 'solver.preconditioner')}", f"must be null or {named}")
        number(cfg, "solver.probes", 1, integer=True)
        number(cfg, "solver.probe_seed", 0, integer=True)
    method = get(cfg, "method.name")
    if get(cfg, "solver.name") == "minres" and method in LINEAR_METHODS and not LINEAR_METHODS[method].symmetric:
        symmetric = ", ".join(name for name, linear in LINEAR_METHODS.items() if linear.symmetric)
        why = f"must solve a symmetric system ({symmetric}); method={method}'s is not: use cg"
        raise ConfigError("solver=minres", why)

    number(cfg, "hessian.samples", 1, integer=True)
    choice(cfg, "hessian.product", HVP_MODES)
    number(cfg, "update.rate", 0.0, lo_open=True)
    number(cfg, "update.max_steps", 1, integer=True)
    number(cfg, "update.max_val_drop", 0.0)
    if get(cfg, "update.recompute_every") is not None:
        number(cfg, "update.recompute_every", 1, integer=True)
    if get(cfg, "update.stall_boost") is not None:
        number(cfg, "update.stall_boost", 0.0, lo_open=True)
    number(cfg, "update.stall_patience", 1, integer=True)
    number(cfg, "update.eval_every", 1, integer=True)
    if choice(cfg, "update.search", SEARCHES) == "bracket":
        for key in ("update.recompute_every", "update.stall_boost"):
            if get(cfg, key) is not None:
                why = "must be null with update.search=bracket (it steps along one fixed direction); use search=linear"
                raise ConfigError(f"{key}={get(cfg, key)}", why)

    number(cfg, "train.epochs", 0, integer=True)
    number(cfg, "train.lr", 0.0, lo_open=True)
    number(cfg, "train.batch_size", 1, integer=True)
    choice(cfg, "train.optimizer", OPTIMIZERS)  # read, and hashed into the cache key: SGD is the one there is
    choice(cfg, "train.schedule", SCHEDULES)

    choice(cfg, "logger.name", LOGGERS)
    if get(cfg, "logger.name") == "wandb":
        choice(cfg, "logger.mode", WANDB_MODES)
        from .tracking import has_credentials

        if get(cfg, "logger.mode") == "online" and not has_credentials():
            raise ConfigError(
                "logger.mode=online",
                "no W&B credentials found; log in with `wandb login` (or set WANDB_API_KEY), "
                "or use logger.mode=offline",
            )


def canonicalize(cfg: DictConfig) -> DictConfig:
    """Rewrite, in place, the keys a run ignores so that equal computations get equal configs.

    A method without a mask (``uses_mask=False``: Koh & Liang, second-order, retraining) gets ``mr=1.0``
    and selector ``all``; at ``mr=1`` every selector takes every Conv/Linear parameter, so the
    selector becomes ``all``. A sweep over MRs and selectors then runs each of these once (the
    repeats find the finished row), and their rows say what was really computed. Likewise a
    method's own keys (e.g. second-order's ``method.hessian_u``, given as
    ``++method.hessian_u=exact`` on a sweep over methods) are dropped from every other method,
    and CG's probe options from a CG without a preconditioner.
    """
    method = METHODS[get(cfg, "method.name")] if get(cfg, "method.name") in METHODS else None
    with open_dict(cfg):
        if method is not None and not method.uses_mask:
            cfg.mr = 1.0
        given = get(cfg, "method") or {}
        for other in METHODS.values():
            for key in other.keys:
                if key in given and (method is None or key not in method.keys):
                    del cfg.method[key]
        solver = get(cfg, "solver") or {}
        if "preconditioner" in solver and solver.get("preconditioner") is None:  # the probes do nothing
            for key in ("probes", "probe_seed"):
                solver.pop(key, None)
        if is_number(get(cfg, "mr")) and cfg.mr >= 1.0 and get(cfg, "selector") is not None:
            cfg.selector.name = "all"
    return cfg
