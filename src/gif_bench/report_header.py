"""What every report states before its tables: the commands, what ran (data, model, recipe,
solver, Hessian sample, line search), how many runs, where and when; and the report's copy in W&B.
Shared by :mod:`gif_bench.report` and :mod:`gif_bench.study_report`."""

from __future__ import annotations

import datetime as dt
import os
import platform
from pathlib import Path

import pandas as pd
import torch
from omegaconf import DictConfig, OmegaConf

from . import tracking
from .methods import METHODS
from .settings import Logger


def _cpu_model() -> str:
    """The CPU's model name (``platform.processor()`` is empty on most Linux systems)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine() -> str:
    cpu = _cpu_model()
    gpu = f", {torch.cuda.get_device_name()}" if torch.cuda.is_available() else ""
    return f"{platform.system()} {cpu}, {os.cpu_count()} CPU cores{gpu}; torch {torch.__version__}"


def runs(n: int) -> str:
    return f"{n} run" if n == 1 else f"{n} runs"


def _options(node: DictConfig, skip: tuple[str, ...] = ("name",)) -> str:
    values = OmegaConf.to_container(node, resolve=True)
    return ", ".join(f"{k}={v}" for k, v in values.items() if k not in skip and not isinstance(v, dict | list))


def setting(cfg: DictConfig, found: pd.DataFrame, varies: str = "") -> str:
    """The setting the sweep ran, from its first job's config (every job shares it; a study's
    solvers are its lines): dataset and its training-set size, network and width, recipe, the
    influence methods' solver, Hessian sample and line search. ``varies``: what the sweep changes
    from job to job beyond methods, MR and seeds (the solver study: its tasks and solvers)."""
    n_train = f", {int(found['n_train'].median()):,} training images" if "n_train" in found and len(found) else ""
    if varies:
        n_train = ""  # the median over different datasets would describe none of them
    first = f" (the first job's; {varies} vary by job)" if varies else ""
    recipe = cfg.train
    width = f" at width {cfg.model.width}" if cfg.model.get("width") is not None else ""  # mlp has none
    return (
        f"- setting{first}: dataset `{cfg.dataset.name}`{n_train}; model `{cfg.model.name}`{width}; "
        f"recipe `{recipe.name}` ({recipe.epochs} epochs, batch {recipe.batch_size}, "
        f"lr {recipe.lr}); influence solver `{cfg.solver.name}` ({_options(cfg.solver)}); Hessian sample "
        f"{cfg.hessian.samples}; line search `{cfg['update'].search}` (γ = {cfg['update'].rate}, "
        f"≤ {cfg['update'].max_steps} steps)\n"
    )


def recipes(cfg: DictConfig, found: pd.DataFrame) -> str:
    """Which methods ran a tuned recipe (``make tune``) and where its settings are; nothing when
    every method ran its published one."""
    if "recipe" not in found or not (found["recipe"] == "tuned").any():
        return ""
    tuned = sorted(set(found.loc[found["recipe"] == "tuned", "method"]))
    oracle = {m.name for m in METHODS.values() if m.oracle}  # retraining has no recipe to tune
    published = sorted(set(found.loc[found["recipe"] != "tuned", "method"]) - oracle)
    others = f"; published for {', '.join(published)}" if published else ""
    return (
        f"- recipes: tuned on validation (`make tune`; its study's seconds in `tuning_seconds`) for "
        f"{', '.join(tuned)}: `conf/recipes/tuned/{cfg.profile}/{cfg.task.name}/<method>.yaml`{others}\n"
    )


def header(
    name: str,
    overrides: list[str],
    found: pd.DataFrame,
    grid: pd.DataFrame,
    iterate: str,
    cfg: DictConfig,
    varies: str = "",
) -> str:
    devices = ", ".join(sorted(set(found["device"]))) if len(found) else "–"
    compute = pd.to_numeric(found.get("total_seconds", pd.Series(dtype=float))).sum() / 60
    return (
        f"# {name}\n\n"
        f"- sweep: `python -m gif_bench {' '.join(overrides)}`\n"
        f"- table: `python -m gif_bench.report {' '.join(overrides)}`\n"
        f"{setting(cfg, found, varies)}"
        f"{recipes(cfg, found)}"
        f"- {len(found)} of {runs(len(grid))} collected; iterate: {iterate} "
        f"({'chosen on validation' if iterate == 'best' else 'the last step'}); mean ± 95 % CI (Student t) over seeds\n"
        f"- runs on: {devices}; run time of the runs (training included): {compute:.1f} min\n"
        f"- report made {dt.datetime.now().isoformat(timespec='seconds')} on {machine()}\n\n"
    )


def log_to_wandb(cfg: DictConfig, name: str, table: pd.DataFrame, written: dict[str, Path]) -> None:
    """The report's table and figure, as a W&B run of the experiment's group (job type ``report``)."""
    logger = Logger.of(OmegaConf.to_container(cfg.logger, resolve=True))
    if not logger.mirrors:
        return
    import wandb

    run = tracking.init_wandb(logger, Path(cfg.paths.root), str(cfg.name), job_type="report", name=f"{name}-report")
    run.log({"table": wandb.Table(dataframe=table.astype(object).where(table.notna(), None))})
    run.log({"figure": wandb.Image(str(written["figure"]))})
    run.finish()
