"""Validation of the composed config, run before any data is read or anything is written.

Every check raises :class:`~gif_bench.errors.ConfigError` naming the key, the value given and
what is allowed, e.g. ``mr=1.5: must be a number in (0, 1]``.
"""

from __future__ import annotations

import re
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf, open_dict

from . import data, models, tasks
from .errors import ConfigError
from .influence import METHODS, SELECTORS, SOLVERS

LOGGERS = ("wandb", "none")
WANDB_MODES = ("offline", "online", "disabled")
HESSIAN_U = ("gauss_newton", "exact")  # second_order's curvature of the removal set
DEVICE_PATTERN = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")


def _get(cfg: DictConfig, key: str) -> Any:
    return OmegaConf.select(cfg, key, throw_on_missing=False)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _number(cfg, key: str, lo: float, hi: float = float("inf"), *, lo_open: bool = False, integer: bool = False):
    v = _get(cfg, key)
    ok = _is_number(v) and (not integer or isinstance(v, int))
    if ok:
        ok = (v > lo if lo_open else v >= lo) and v <= hi
    if not ok:
        kind = "an integer" if integer else "a number"
        left = "(" if lo_open else "["
        right = "∞)" if hi == float("inf") else f"{hi:g}]"
        raise ConfigError(f"{key}={v}", f"must be {kind} in {left}{lo:g}, {right}")
    return v


def _choice(cfg, key: str, allowed) -> Any:
    v = _get(cfg, key)
    if v not in allowed:
        raise ConfigError(f"{key}={v}", f"must be one of {', '.join(map(str, allowed))}")
    return v


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
    spec = _get(cfg, "device")
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


def validate(cfg: DictConfig) -> None:
    """Check every user-facing value of ``cfg``; raise :class:`ConfigError` on the first bad one."""
    _number(cfg, "mr", 0.0, 1.0, lo_open=True)
    _number(cfg, "seed", 0, integer=True)
    _device(cfg)
    for key in ("force", "save_edited"):
        if not isinstance(_get(cfg, key), bool):
            raise ConfigError(f"{key}={_get(cfg, key)}", "must be true or false")

    _choice(cfg, "dataset.name", tuple(data.LOADERS))
    classes = _number(cfg, "dataset.num_classes", 2, integer=True)
    _number(cfg, "dataset.val_fraction", 0.0, 1.0, lo_open=True)
    _choice(cfg, "model.name", models.MODELS)
    if _get(cfg, "model.name") in ("vgg11", "small_cnn", "resnet18"):
        _number(cfg, "model.width", 0.0, lo_open=True)
    if _get(cfg, "model.name") == "vgg11":
        if _get(cfg, "dataset.image_size") != 32:
            raise ConfigError(f"dataset.image_size={_get(cfg, 'dataset.image_size')}", "model=vgg11 needs 32")

    task = _choice(cfg, "task.name", (*tasks.TASKS, "toy_regression"))
    _number(cfg, "task.stop_self_acc", 0.0, 100.0)
    if task in ("class_removal", "backdoor"):
        _number(cfg, "task.target_class", 0, classes - 1, integer=True)
    if task == "label_change":
        mode = _choice(cfg, "task.mode", tasks.LABEL_CHANGE_MODES)
        if mode == "class":
            source = _number(cfg, "task.source_class", 0, classes - 1, integer=True)
            new = _number(cfg, "task.new_class", 0, classes - 1, integer=True)
            if source == new:
                raise ConfigError(f"task.new_class={new}", "must differ from task.source_class")
            _number(cfg, "task.source_fraction", 0.0, 1.0, lo_open=True)
        else:
            _number(cfg, "task.random_fraction", 0.0, 1.0, lo_open=True)
    if task == "backdoor":
        _number(cfg, "task.poison_rate", 0.0, 1.0, lo_open=True)
        trigger = _choice(cfg, "task.trigger", tasks.TRIGGERS)
        if trigger == "checkerboard":
            _number(cfg, "task.trigger_amount", 0.0, 255.0, lo_open=True)
        else:
            _number(cfg, "task.patch_size", 1, _get(cfg, "dataset.image_size"), integer=True)

    _choice(cfg, "selector.name", SELECTORS)
    _number(cfg, "selector.samples", 1, integer=True)
    if _choice(cfg, "method.name", (*METHODS, "second_order", "retrain")) == "second_order":
        _choice(cfg, "method.hessian_u", HESSIAN_U)
    _choice(cfg, "solver.name", SOLVERS)
    if _get(cfg, "solver.name") == "lissa":
        _number(cfg, "solver.max_iter", 1, integer=True)
        _number(cfg, "solver.tol", 0.0)
        _choice(cfg, "solver.growth", ("multiply", "add"))
        _number(cfg, "solver.mu", 0.0 if _get(cfg, "solver.growth") == "add" else 1.0, lo_open=True)
        _number(cfg, "solver.max_restarts", 0, integer=True)
        if _get(cfg, "solver.scale") != "auto":
            _number(cfg, "solver.scale", 0.0, lo_open=True)
    if _get(cfg, "solver.name") in ("cg", "lsqr"):
        _number(cfg, "solver.max_iter", 1, integer=True)
        _number(cfg, "solver.tol", 0.0)

    _number(cfg, "hessian.samples", 1, integer=True)
    _number(cfg, "update.rate", 0.0, lo_open=True)
    _number(cfg, "update.max_steps", 1, integer=True)

    _number(cfg, "train.epochs", 0, integer=True)
    _number(cfg, "train.lr", 0.0, lo_open=True)
    _number(cfg, "train.batch_size", 1, integer=True)

    _choice(cfg, "logger.name", LOGGERS)
    if _get(cfg, "logger.name") == "wandb":
        _choice(cfg, "logger.mode", WANDB_MODES)
        from .tracking import has_credentials

        if _get(cfg, "logger.mode") == "online" and not has_credentials():
            raise ConfigError(
                "logger.mode=online",
                "no W&B credentials found; log in with `wandb login` (or set WANDB_API_KEY), "
                "or use logger.mode=offline",
            )


# Methods that change every parameter whatever the selector chose (or, for retrain, none).
MASK_FREE_METHODS = ("koh", "second_order", "retrain")


def canonicalize(cfg: DictConfig) -> DictConfig:
    """Rewrite, in place, the keys a run ignores so that equal computations get equal configs.

    ``koh``, ``second_order`` and ``retrain`` do not use a mask: their ``mr`` becomes 1.0 and
    their selector ``all``. At ``mr=1`` every selector takes every Conv/Linear parameter: the
    selector becomes ``all``. A sweep over MRs and selectors then runs each of these once (the
    repeats find the finished row), and their rows say what was really computed. Likewise
    ``method.hessian_u`` (``++method.hessian_u=exact`` on a sweep over methods) is dropped from
    every method but ``second_order``.
    """
    with open_dict(cfg):
        if _get(cfg, "method.name") in MASK_FREE_METHODS:
            cfg.mr = 1.0
        if _get(cfg, "method.name") != "second_order" and "hessian_u" in (_get(cfg, "method") or {}):
            del cfg.method["hessian_u"]
        if _is_number(_get(cfg, "mr")) and cfg.mr >= 1.0 and _get(cfg, "selector") is not None:
            cfg.selector.name = "all"
    return cfg
