"""One benchmark run: ``run(cfg)`` takes a composed config and returns its result row."""

from __future__ import annotations

import logging
import platform
import resource
import subprocess
import time
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig

from . import data as datasets
from . import editing, influence, metrics, models, results, storage, tasks, tracking, train
from .config import resolve_device, validate
from .errors import ConfigError
from .influence import tree
from .influence.methods import EXACT_MAX_PARAMS

log = logging.getLogger(__name__)


def _git_sha() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True, text=True, timeout=5
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def _peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    # ru_maxrss is in KiB on Linux: the process's peak resident set.
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _prefixed(prefix: str, values: dict[str, Any], keys) -> dict[str, Any]:
    return {f"{prefix}{k}": values[k] for k in keys if k in values}


REPORTED = ("test_acc", "test_loss", "self_acc", "self_loss", "forget_test_acc", "val_acc", "f1", "val_f1")


def base_row(cfg: DictConfig, device: torch.device) -> dict[str, Any]:
    return {
        "run_id": results.run_id(cfg),
        "experiment": str(cfg.name),
        "task": cfg.task.name,
        "method": cfg.method.name,
        "selector": cfg.selector.name,
        "solver": cfg.solver.name,
        "mr": float(cfg.mr),
        "seed": int(cfg.seed),
        "dataset": cfg.dataset.name,
        "model": cfg.model.name,
        "model_width": cfg.model.get("width"),
        "train_recipe": cfg.train.name,
        "update_rate": float(cfg["update"].rate),
        "stop_self_acc": float(cfg.task.stop_self_acc),
        "hessian_samples": int(cfg.hessian.samples),
        "status": "running",
        "error": None,
        "device": str(device),
        "torch_version": torch.__version__,
        "python_version": platform.python_version(),
        "git_sha": _git_sha(),
        "wandb_run_id": None,
    }


def run(cfg: DictConfig) -> dict[str, Any]:
    """Validate, train or load, edit, evaluate, and record one configuration.

    Returns the result row (also written atomically to ``results.row_path(cfg)``). A finished
    ``ok`` row is returned as is unless ``cfg.force``.
    """
    validate(cfg)
    if cfg.task.name == "toy_regression":
        from . import toy

        return toy.run(cfg)
    if not cfg.force and (done := results.finished(cfg)) is not None:
        log.info("already done, skipping (force=true to re-run): %s", results.row_path(cfg))
        return done

    started = time.perf_counter()
    device = resolve_device(cfg.device)
    if device.type == "cuda":  # jobs of a sweep share the process: measure this one alone
        torch.cuda.reset_peak_memory_stats(device)
    root = Path(cfg.paths.root)
    dataset = datasets.load(cfg.dataset, cfg.paths.data, device)
    edit = tasks.build(cfg.task, dataset)
    torch.manual_seed(int(cfg.seed))
    model = models.build(cfg.model, dataset.in_channels, dataset.num_classes, cfg.dataset.image_size).to(device)
    metric_fn = metrics.TASK_METRICS[cfg.task.name]
    if cfg.solver.name == "exact" and models.n_params(model) > EXACT_MAX_PARAMS:
        raise ConfigError(
            "solver=exact",
            f"needs a model of at most {EXACT_MAX_PARAMS:,} parameters; this one has "
            f"{models.n_params(model):,} (use solver=cg or solver=lissa)",
        )

    budget = sum(influence.layer_budget(m, float(cfg.mr)) for m in influence.selectable_layers(model).values())
    if cfg.selector.name != "all" and budget == 0:
        raise ConfigError(f"mr={cfg.mr}", "selects no parameter in any layer of this model; raise mr")

    row = base_row(cfg, device)
    tracker = tracking.start(cfg, root)
    row["wandb_run_id"] = tracker.run_id
    try:
        trained = train.train_or_load(cfg, model, dataset, edit.train_set, device, root / "cache")
        row.update(
            n_params=models.n_params(model),
            n_train=edit.m,
            n_removed=edit.u,
            model_cached=trained.cached,
            train_seconds=trained.seconds,
        )
        before = metric_fn(model, edit)
        row.update(_prefixed("before_", before, REPORTED))
        tracker.log(before, step=0)

        direction = editing.influence_direction(cfg, model, edit)
        info = direction.info
        row.update(
            n_selected=tree.count(direction.mask),
            influence_seconds=direction.seconds,
            hvps=info.hvps,
            solver_iterations=info.iterations,
            solver_restarts=info.restarts,
            solver_scale=info.scale,
            solver_residual=info.residual,
            solver_converged=info.converged,
        )
        traj = editing.apply_updates(
            model,
            edit,
            direction.delta,
            rate=float(cfg["update"].rate),
            max_steps=int(cfg["update"].max_steps),
            stop_self_acc=float(cfg.task.stop_self_acc),
            metric_fn=metric_fn,
            on_step=tracker.log,
        )
        row.update(_prefixed("", traj.final, REPORTED))
        row.update(_prefixed("best_", traj.best, REPORTED))
        row.update(
            steps=traj.final["step"],
            best_step=traj.best["step"],
            reached_threshold=traj.reached_threshold,
            update_seconds=direction.seconds + traj.seconds,
            trajectory=[{k: s[k] for k in ("step", "self_acc", "test_acc", "val_acc")} for s in traj.steps],
        )
        if cfg.save_edited:
            final_state = {k: v.detach() for k, v in model.state_dict().items()}
            best_state = {**final_state, **traj.best_state}
            folder = root / "edited" / str(cfg.name) / row["run_id"]
            storage.save_torch(folder / "final.pt", final_state)
            storage.save_torch(folder / "best.pt", best_state)
            row["edited_dir"] = str(folder)
        row["status"] = "ok"
    except Exception as err:
        row.update(status="failed", error=f"{type(err).__name__}: {err}")
        raise
    finally:
        row["peak_memory_mb"] = _peak_memory_mb(device)
        row["total_seconds"] = time.perf_counter() - started
        path = results.write_row(cfg, row)
        tracker.summary({k: v for k, v in row.items() if k != "trajectory"})
        tracker.finish(exit_code=0 if row["status"] == "ok" else 1)
    log.info(
        "%s: test_acc %.2f (before %.2f), self_acc %.2f (before %.2f) after %d steps -> %s",
        row["status"],
        row["test_acc"],
        row["before_test_acc"],
        row["self_acc"],
        row["before_self_acc"],
        row["steps"],
        path,
    )
    return row
