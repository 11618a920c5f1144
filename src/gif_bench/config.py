"""Where Hydra's composed config becomes a run's typed settings, the one module below the
command line that reads it: validation (before any data is read or anything is written),
canonicalisation, the run id, and :func:`settle`, which turns the config into
:class:`~gif_bench.settings.Run` for everything below.

Every check raises :class:`~gif_bench.errors.ConfigError` naming the key, the value given and
what is allowed, e.g. ``mr=1.5: must be a number in (0, 1]``.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf, open_dict
from omegaconf.errors import OmegaConfBaseException

from . import methods, storage, study, tasks, tuning
from .checks import Config, choice, get, is_number, number
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
from .settings import (
    OPTIMIZERS,
    SCHEDULES,
    Dataset,
    Hessian,
    Logger,
    Model,
    Paths,
    Recipe,
    Run,
    Selector,
    Solver,
    Update,
    resolve_device,
    typed,
)
from .tasks import TASKS

LOGGERS = ("wandb", "none")
WANDB_MODES = ("offline", "online", "disabled")
DEVICE_PATTERN = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")


def _device(cfg: Config) -> None:
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


def _writable_folder(cfg: Config, key: str) -> None:
    """``key`` names a folder that exists or can be made: its nearest existing ancestor is a
    writable folder. Nothing is created here."""
    path = Path(str(get(cfg, key))).absolute()
    existing = next(p for p in (path, *path.parents) if p.exists())
    if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        raise ConfigError(f"{key}={get(cfg, key)}", f"must be a folder this user can write ({existing} is not)")


def plain(cfg: DictConfig) -> dict:
    """``cfg`` as plain containers with every interpolation resolved; a value that cannot be
    resolved raises :class:`ConfigError` naming its key."""
    try:
        return OmegaConf.to_container(cfg, resolve=True)
    except OmegaConfBaseException as err:
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise ConfigError(str(getattr(err, "full_key", None) or "config"), f"cannot be resolved ({reason})") from None


def not_a_run(cfg: DictConfig) -> str | None:
    """Why this job of the solver study's sweep is not a run (its variant applies to other
    methods, :func:`gif_bench.study.skipped`), or ``None``. First resolves, in place, the study's
    node (its reference's MR and selector are ``${mr}`` and ``${selector.name}``, which
    :func:`canonicalize` turns into 1 and ``all`` for a method without a mask)."""
    node = cfg.get("study")
    if node is None:
        return None
    OmegaConf.resolve(node)
    return study.skipped(OmegaConf.to_container(node), OmegaConf.select(cfg, "method.name"))


def _tune(cfg: Config) -> None:
    """``tune``: false for a run, or the name of the tuning study it is a trial of, on a tuning
    seed and with a method that has something to tune (:mod:`gif_bench.tuning`)."""
    tune = get(cfg, "tune")
    if tune is False or tune is None:
        return
    if not isinstance(tune, str) or not tune:
        raise ConfigError(f"tune={tune}", "must be false, or the name of the tuning study this run is a trial of")
    if isinstance(get(cfg, "seed"), int) and get(cfg, "seed") < tuning.FIRST_SEED:
        raise ConfigError(
            f"seed={get(cfg, 'seed')}",
            f"a tuning trial (tune={tune}) runs on a tuning seed, {tuning.FIRST_SEED} or more; "
            "the evaluation seeds are below it",
        )
    method = get(cfg, "method.name")
    if method in METHODS and not METHODS[method].space():
        raise ConfigError(f"method={method}", "has nothing to tune (its search space is empty)")


def validate(cfg: DictConfig) -> None:
    """Check every user-facing value of ``cfg``; raise :class:`ConfigError` on the first bad one.

    The common keys are checked here, each component's own keys by its registry entry, on the
    config as plain, resolved containers; a value that cannot be resolved (an interpolation to
    a key that does not exist, ``mr='${nope}'``) is refused too, naming its key.
    """
    cfg = plain(cfg)
    number(cfg, "mr", 0.0, 1.0, lo_open=True)
    number(cfg, "seed", 0, integer=True)
    _device(cfg)
    for key in ("force", "save_edited"):
        if not isinstance(get(cfg, key), bool):
            raise ConfigError(f"{key}={get(cfg, key)}", "must be true or false")
    _tune(cfg)

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


# Keys that change where or how a run is recorded, not what it computes.
# paper_series reaches the run only through solver=authors, whose resolved keys are hashed; the
# solver study's study_grid only through the solver's and the method's damping (experiment=solver_study).
NOT_IN_RUN_ID = ("paths", "logger", "force", "save_edited", "hydra", "profile", "paper_series", "study_grid")
# Nested keys of the same kind: update.eval_every sets how densely the trajectory records the
# test splits, not the final or best iterate (tests/test_line_search.py).
NOT_IN_RUN_ID_NESTED = ("update.eval_every",)
# Options hashed only away from the value that computes what runs did before they existed, so
# that adding one keeps every earlier run id (and its rows and cached results).
HASHED_UNLESS = {"update.search": "linear", "tune": False}


def _pop(spec: dict, dotted: str, unless: object = None, always: bool = True) -> None:
    *parents, leaf = dotted.split(".")
    for key in parents:
        spec = spec.get(key) if isinstance(spec, dict) else None
    if isinstance(spec, dict) and leaf in spec and (always or spec[leaf] == unless):
        del spec[leaf]


def run_id(cfg: DictConfig) -> str:
    """Hash of the resolved config without the keys of :data:`NOT_IN_RUN_ID`; ``device: auto`` is
    replaced by the device type it resolves to, so CPU and GPU results are kept apart."""
    spec = OmegaConf.to_container(cfg, resolve=True)
    for key in NOT_IN_RUN_ID:
        spec.pop(key, None)
    for key in NOT_IN_RUN_ID_NESTED:
        _pop(spec, key)
    for key, value in HASHED_UNLESS.items():
        _pop(spec, key, unless=value, always=False)
    spec["device"] = resolve_device(str(cfg.device)).type
    return storage.digest(spec, length=12)


def settle(cfg: DictConfig) -> Run:
    """The typed settings of a validated, canonicalised config (:func:`validate`,
    :func:`canonicalize`): each component's node as its dataclass (a task's and a method's
    options as their registry entry declares), the resolved config itself as the run's
    ``fingerprint`` (the cache keys hash parts of it) and its :func:`run_id`."""
    values = OmegaConf.to_container(cfg, resolve=True)
    return Run(
        name=str(values["name"]),
        seed=int(values["seed"]),
        mr=float(values["mr"]),
        device=str(values["device"]),
        force=bool(values["force"]),
        save_edited=bool(values["save_edited"]),
        paths=typed(Paths, values["paths"]),
        dataset=Dataset.of(values["dataset"]),
        model=typed(Model, values["model"]),
        task=tasks.settings(values["task"]),
        selector=typed(Selector, values["selector"]),
        method=methods.settings(values["method"]),
        solver=Solver.of(values["solver"]),
        hessian=typed(Hessian, values["hessian"]),
        update=typed(Update, values["update"]),
        train=Recipe.of(values["train"]),
        logger=Logger.of(values["logger"]),
        scale_epochs=bool((values.get("unlearning") or {}).get("scale_epochs", False)),
        study=values.get("study"),
        tune=values.get("tune") or None,
        tuning=values.get("tuning"),
        fingerprint=values,
        run_id=run_id(cfg),
    )


def run_settings(cfg: DictConfig) -> Run:
    """:func:`validate`, :func:`canonicalize` (in place) and :func:`settle` ``cfg``: what the
    runner and every script do with a composed config."""
    validate(cfg)
    return settle(canonicalize(cfg))
