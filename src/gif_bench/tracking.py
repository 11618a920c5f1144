"""Experiment tracking: one W&B run per job (offline by default), or nothing."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf


def init_wandb(cfg: DictConfig, root: Path, **kwargs: Any):
    """A W&B run with ``cfg.logger``'s project, entity, mode and tags, under ``root``, in the
    experiment's group (``cfg.name``); ``kwargs`` go to ``wandb.init``."""
    import wandb

    root.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("WANDB_SILENT", "true")
    return wandb.init(
        project=cfg.logger.project,
        entity=cfg.logger.entity,
        mode=cfg.logger.mode,
        dir=str(root),
        group=str(cfg.name),
        tags=list(cfg.logger.tags),
        reinit="finish_previous",
        settings=wandb.Settings(console="off", x_disable_stats=True),
        **kwargs,
    )


class NullTracker:
    run_id: str | None = None

    def log(self, metrics: dict[str, Any], step: int) -> None:
        pass

    def summary(self, row: dict[str, Any]) -> None:
        pass

    def finish(self, exit_code: int = 0) -> None:
        pass


class WandbTracker(NullTracker):
    """A W&B run whose config is the resolved Hydra config and whose summary is the result row."""

    def __init__(self, cfg: DictConfig, root: Path) -> None:
        self._run = init_wandb(
            cfg,
            root,
            config=OmegaConf.to_container(cfg, resolve=True),
            job_type=cfg.method.name,
            name=f"{cfg.task.name}-{cfg.method.name}-{cfg.selector.name}-mr{cfg.mr}-s{cfg.seed}",
        )
        self.run_id = self._run.id

    def log(self, metrics: dict[str, Any], step: int) -> None:
        self._run.log(metrics, step=step)

    def summary(self, row: dict[str, Any]) -> None:
        self._run.summary.update({k: v for k, v in row.items() if v is not None})

    def finish(self, exit_code: int = 0) -> None:
        self._run.finish(exit_code=exit_code)


def start(cfg: DictConfig, root: Path) -> NullTracker:
    if cfg.logger.name == "wandb" and cfg.logger.mode != "disabled":
        return WandbTracker(cfg, root)
    return NullTracker()
