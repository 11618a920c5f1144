"""One benchmark run: :func:`record` takes a run's typed settings
(:class:`~gif_bench.settings.Run`), trains or loads, edits, evaluates, and returns the result row
it writes. The command line reaches it through :func:`gif_bench.runner.run`, which turns the
composed config into those settings."""

from __future__ import annotations

import logging
import math
import platform
import resource
import subprocess
import time
from pathlib import Path
from typing import Any

import torch

from . import (
    cost,
    metrics,
    models,
    pipeline,
    rows,
    storage,
    study,
    tracking,
    tuning,
    updates,
)
from .errors import RunFailed, UserError, WithheldData
from .methods import METHODS
from .oracle import KEYS, Reference, against_oracle
from .settings import Run, resolve_device
from .tasks import TASKS

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


def base_row(run: Run, device: torch.device) -> dict[str, Any]:
    own = run.method.options
    update = run.update
    return {
        "run_id": run.run_id,
        "experiment": run.name,
        "task": run.task.name,
        "method": run.method.name,
        # every method's own options, None where this method has not that one
        **{key: getattr(own, key, None) for method in METHODS.values() for key in method.keys},
        "selector": run.selector.name,
        "solver": run.solver.name,
        "mr": run.mr,
        "seed": run.seed,
        "dataset": run.dataset.name,
        "model": run.model.name,
        "model_width": run.model.width,
        "train_recipe": run.train.name,
        "update_rate": update.rate,
        "max_val_drop": update.max_val_drop,
        "recompute_every": update.recompute_every,
        "stall_boost": update.stall_boost,
        "search": update.search,
        "eval_every": update.eval_every,
        "stop_self_acc": getattr(run.task.options, "stop_self_acc", None),
        "hessian_samples": run.hessian.samples,
        "recipe": "published" if run.tuning is None else "tuned",
        "tuning_trials": (run.tuning or {}).get("trials"),
        "tuning_seconds": (run.tuning or {}).get("seconds"),  # the study that chose a tuned recipe
        "tune": run.tune,
        "status": "running",
        "error": None,
        "device": str(device),
        "torch_version": torch.__version__,
        "python_version": platform.python_version(),
        "git_sha": _git_sha(),
        "wandb_run_id": None,
    }


def _reporting(metric_fn, reference: Reference | None, seed: int):
    """What a row reports of a model: the task's metrics and the oracle-relative ones
    (:func:`~gif_bench.oracle.against_oracle`), from one forward per evaluation set."""

    def report(model, edit) -> dict[str, float]:
        with metrics.shared_logits():
            return {**metric_fn(model, edit), **against_oracle(model, edit, reference, seed)}

    return report


def _edit(
    prepared: pipeline.Prepared,
    before_val_acc: float,
    retrained: dict[str, float],
    reference: Reference,
    tracker,
    unit: cost.UnitCosts,
) -> dict:
    """Edit the model with ``run.method`` (an influence update or a fine-tuning unlearner); the
    row's fields for the final and best iterates and the edit's cost."""
    run, model, edit, dataset = prepared.run, prepared.model, prepared.edit, prepared.dataset
    task = TASKS[run.task.name]
    reported, metric_fn = task.reported, task.metrics
    report = _reporting(metric_fn, reference, run.seed)
    traj, row = updates.of(run)(run, model, edit, dataset, metric_fn, before_val_acc, tracker, unit, report)
    row.update(rows.prefixed("final", traj.final, (*reported, *KEYS)))  # unprefixed: the final iterate
    row.update(rows.prefixed("best", traj.best, (*reported, *KEYS)))  # best_: the best on validation
    row.update(
        gap_to_retrain=metrics.gap(traj.final, retrained, run.task.name),
        best_gap_to_retrain=metrics.gap(traj.best, retrained, run.task.name),
        steps=traj.final["step"],
        best_step=traj.best["step"],
        reached_threshold=traj.reached_threshold,
        stop_reason=traj.stop_reason,
        update_seconds=row["edit_seconds"],
        # test metrics where evaluated: every update.eval_every steps, the final and the best
        trajectory=[{k: s[k] for k in task.trajectory if k in s and not math.isnan(s[k])} for s in traj.steps],
    )
    if run.save_edited:
        final_state = {k: v.detach() for k, v in model.state_dict().items()}
        best_state = {**final_state, **traj.best_state}
        folder = Path(run.paths.root) / "edited" / run.name / run.run_id
        storage.save_torch(folder / "final.pt", final_state)
        storage.save_torch(folder / "best.pt", best_state)
        row["edited_dir"] = str(folder)
    return row


def record(run: Run) -> dict[str, Any]:
    """Train or load, edit, evaluate, and record one run.

    Returns the result row (also written atomically to ``rows.row_path(run)``). A finished
    ``ok`` row is returned as is unless ``run.force``. A run that fails writes its ``failed`` row
    and raises :class:`~gif_bench.errors.RunFailed` (or the :class:`UserError` that stopped it).
    """
    if not run.force and (done := rows.finished(run)) is not None:
        log.info("already done, skipping (force=true to re-run): %s", rows.row_path(run))
        return done
    started = time.perf_counter()
    device = resolve_device(run.device)
    if device.type == "cuda":  # jobs of a sweep share the process: measure this one alone
        torch.cuda.reset_peak_memory_stats(device)
    prepared = pipeline.prepare(run, device)
    row = {**base_row(run, device), **study.row_fields(run)}  # the solver study's variant (nothing outside it)
    tracker = tracking.start(
        run.logger,
        Path(run.paths.root),
        run.name,
        config=run.fingerprint,
        job_type=run.method.name,
        name=f"{run.task.name}-{run.method.name}-{run.selector.name}-mr{run.mr}-s{run.seed}",
    )
    row["wandb_run_id"] = tracker.run_id
    failure: Exception | None = None
    try:
        (tuning.fill if run.tune else _fill)(row, prepared, tracker)
        row["status"] = "ok"
    except Exception as err:
        row.update(status="failed", error=f"{type(err).__name__}: {err}")
        failure = err
    finally:
        row["peak_memory_mb"] = _peak_memory_mb(device)
        row["total_seconds"] = time.perf_counter() - started
        tracker.summary({k: v for k, v in row.items() if k != "trajectory"})
        row["wandb_error"] = tracker.error  # W&B mirrors the row; its failures never lose it
        path = rows.write_row(run, row)
        tracker.finish(exit_code=0 if row["status"] == "ok" else 1)
    if failure is not None:
        if isinstance(failure, UserError | WithheldData):
            raise failure  # the user's to fix (data missing, …): one line; a trial that read the test data: loudly
        raise RunFailed(f"{row['error']} (its row: {path})") from failure
    _log_result(row, path)
    return row


def _fill(row: dict[str, Any], prepared: pipeline.Prepared, tracker) -> None:
    """The row's fields: the trained model, the oracle, the model before the edit, and the
    edit's result (or, for ``method=retrain``, the oracle's)."""
    run, edit, model = prepared.run, prepared.edit, prepared.model
    task, method = TASKS[run.task.name], METHODS[run.method.name]
    trained = pipeline.trained(prepared)
    row.update(
        n_params=models.n_params(model),
        n_train=edit.m,
        n_removed=edit.u,
        model_cached=trained.cached,
        train_seconds=trained.seconds,
    )
    oracle = pipeline.retrained(prepared)
    with metrics.shared_logits():  # one forward of the oracle per evaluation set
        retrained = task.metrics(oracle.model, edit)
        reference = Reference.of(oracle.model, edit, run.seed)
        as_oracle = against_oracle(oracle.model, edit, reference, run.seed)
    before = _reporting(task.metrics, reference, run.seed)(model, edit)
    row.update(rows.prefixed("before", before, (*task.reported, *KEYS)))
    tracker.log({k: before[k] for k in task.reported}, step=0)
    row.update(rows.prefixed("retrain", retrained, task.reported))
    retrain_gradients = cost.retrain_gradients(run.train.epochs, len(edit.retrain_set()))
    row.update(
        retrain_seconds=oracle.seconds,  # as recorded when it was trained, also when loaded
        retrain_cached=oracle.cached,
        retrain_example_grads=retrain_gradients,
        retrain_mia_efficacy=as_oracle["mia_efficacy"],  # the target; its KL, agreement and ToW are trivial
        retrain_retain_acc=as_oracle["retain_acc"],
    )
    if method.oracle:
        row.update(_oracle_as_result(retrained, as_oracle, task.reported, oracle.seconds, retrain_gradients))
    else:
        unit = updates.unit_costs(run, model, edit)
        row.update(_edit(prepared, before["val_acc"], retrained, reference, tracker, unit))
    row.update(
        speedup_vs_retrain=cost.speedup(row["retrain_seconds"], row["edit_seconds"]),
        gradient_speedup_vs_retrain=cost.speedup(retrain_gradients, row["edit_example_grads"]),
    )


def _oracle_as_result(retrained, as_oracle, reported, seconds: float, gradients: float) -> dict[str, Any]:
    """``method=retrain``: the oracle is the result, its final and best iterate, at its cost."""
    return {
        **rows.prefixed("final", retrained, reported),
        **rows.prefixed("best", retrained, reported),
        **as_oracle,
        **rows.prefixed("best", as_oracle, KEYS),
        **dict(steps=0, best_step=0, update_seconds=seconds, gap_to_retrain=0.0),
        **dict(best_gap_to_retrain=0.0, edit_seconds=seconds, edit_example_grads=gradients),
    }


def _log_result(row: dict[str, Any], path: Path) -> None:
    if row.get("tune"):
        log.info("trial of %s: objective %.4f after %d steps -> %s", row["tune"], row["objective"], row["steps"], path)
        return
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
