"""One benchmark run: ``run(cfg)`` takes a composed config and returns its result row."""

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
from omegaconf import DictConfig, OmegaConf

from . import (
    cost,
    editing,
    line_search,
    metrics,
    models,
    pipeline,
    rows,
    storage,
    study,
    tasks,
    tracking,
    unlearning,
)
from .config import canonicalize, resolve_device, validate
from .errors import RunFailed, UserError
from .influence import tree
from .methods import METHODS
from .oracle import KEYS, Reference, against_oracle
from .settings import Logger
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


def base_row(cfg: DictConfig, device: torch.device) -> dict[str, Any]:
    return {
        "run_id": rows.run_id(cfg),
        "experiment": str(cfg.name),
        "task": cfg.task.name,
        "method": cfg.method.name,
        **{key: cfg.method.get(key) for method in METHODS.values() for key in method.keys},  # methods' own options
        "selector": cfg.selector.name,
        "solver": cfg.solver.name,
        "mr": float(cfg.mr),
        "seed": int(cfg.seed),
        "dataset": cfg.dataset.name,
        "model": cfg.model.name,
        "model_width": cfg.model.get("width"),
        "train_recipe": cfg.train.name,
        "update_rate": float(cfg["update"].rate),
        "max_val_drop": float(cfg["update"].max_val_drop),
        "recompute_every": cfg["update"].get("recompute_every"),
        "stall_boost": cfg["update"].get("stall_boost"),
        "search": cfg["update"].search,
        "eval_every": int(cfg["update"].eval_every),
        "stop_self_acc": float(cfg.task.stop_self_acc) if "stop_self_acc" in cfg.task else None,
        "hessian_samples": int(cfg.hessian.samples),
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


def _unit_costs(cfg: DictConfig, model, edit: tasks.Edit) -> cost.UnitCosts:
    """One example's gradient and forward, timed on a batch of the Hessian sample's size (before
    the edit's clock starts)."""
    n = min(int(cfg.hessian.samples), edit.m)
    x, y = edit.train_set.x[:n], edit.train_set.y[:n]
    return cost.unit_costs(model, x, y)


def _unit_fields(unit: cost.UnitCosts) -> dict[str, float]:
    return dict(example_gradient_seconds=unit.gradient, forward_gradient_ratio=unit.forward_ratio)


def _solve_fields(direction: editing.Direction) -> dict[str, Any]:
    info = direction.info
    return dict(
        n_selected=tree.count(direction.mask),
        influence_seconds=direction.seconds,
        hvps=info.hvps,
        solver_iterations=info.iterations,
        solver_restarts=info.restarts,
        solver_scale=info.scale,
        solver_residual=info.residual,
        solver_converged=info.converged,
        solver_hvp=info.hvp,  # how the Hessian products were formed (fallbacks included)
        solved_by=info.solver,  # the method's own solve (kfac, arnoldi, …) where it has one
    )


def _update_by_influence(cfg, model, edit, dataset, metric_fn, before_val_acc: float, tracker, unit, report):
    """Select, solve and step along the direction (recomputed every ``update.recompute_every``
    steps); the trajectory and the row's cost fields (:mod:`gif_bench.cost`)."""
    task = TASKS[cfg.task.name]
    counter = cost.ForwardCounter()
    start = time.perf_counter()
    first = editing.influence_direction(
        cfg, METHODS[cfg.method.name], model, edit, stored=study.stored_solve(cfg, edit)
    )
    row: dict[str, Any] = _solve_fields(first)
    # Not the edit's own time: the solver study's measurements of Δθ (made before the steps move
    # θ̂), less a stored solve's seconds (counted as when it was solved, as a loaded oracle's are).
    not_the_edit = -first.solve_seconds if first.stored else 0.0
    if study.wants_references(cfg):
        measuring = time.perf_counter()
        row.update(study.reference_fields(cfg, edit, first))
        row["reference_seconds"] = time.perf_counter() - measuring
        not_the_edit += row["reference_seconds"]
    every = cfg["update"].get("recompute_every")
    directions = [first]

    def recompute(_step: int) -> dict:
        directions.append(editing.influence_direction(cfg, METHODS[cfg.method.name], model, edit, mask=first.mask))
        return directions[-1].delta

    update = cfg["update"]
    common = dict(
        rate=float(update.rate),
        max_steps=int(update.max_steps),
        stop=lambda m: task.stop(m, cfg.task),
        metric_fn=metric_fn,  # the test splits: the row's, not the edit's (uncounted, report_seconds)
        decide=counter.counted(lambda model, edit: metric_fn(model, edit, only=task.decides_on)),
        score=task.score,
        collapse_below=before_val_acc - float(update.max_val_drop),
        on_step=tracker.log,
        report=report,
    )
    if update.search == "bracket":
        traj = line_search.bracket_updates(model, edit, first.delta, **common)
    else:
        traj = line_search.apply_updates(
            model,
            edit,
            first.delta,
            **common,
            eval_every=int(update.eval_every),
            recompute_every=None if every is None else int(every),
            recompute=recompute,
            stall_boost=update.get("stall_boost"),
            stall_patience=int(update.get("stall_patience", 10)),
        )
    search_seconds = traj.seconds - traj.report_seconds
    edit_seconds = time.perf_counter() - start - not_the_edit - traj.report_seconds
    hvps = sum(d.info.hvps for d in directions)
    gradients, rho_hvp = cost.influence_gradients(
        hvps=hvps,
        hessian_samples=int(cfg.hessian.samples),
        solve_seconds=sum(d.solve_seconds for d in directions),
        removed=edit.u * len(directions),
        forwards=counter.examples,
        unit=unit,
    )
    row.update(
        hvps=hvps,
        directions=len(directions),
        influence_seconds=sum(d.seconds for d in directions),
        solve_seconds=sum(d.solve_seconds for d in directions),
        rate_boosts=traj.boosts,
        edit_seconds=edit_seconds,
        search_seconds=search_seconds,  # the line search's share of edit_seconds (recomputed directions included)
        report_seconds=traj.report_seconds,  # evaluating for the row (test splits, oracle metrics): not the edit's
        eval_forwards=counter.examples,
        hvp_gradient_ratio=rho_hvp,
        edit_example_grads=gradients,
        **_unit_fields(unit),
    )
    return traj, row


def _update_by_unlearning(cfg, model, edit, dataset, metric_fn, before_val_acc: float, tracker, unit, report):
    """Train the method's :class:`~gif_bench.unlearning.Plan`; the trajectory (one step per
    epoch) and the row's cost fields (:mod:`gif_bench.cost`)."""
    task, method = TASKS[cfg.task.name], METHODS[cfg.method.name]
    counter = cost.ForwardCounter()
    start = time.perf_counter()
    plan = method.unlearn(cfg, model, edit, dataset)
    traj = unlearning.unlearn(
        cfg, model, edit, dataset, plan, metric_fn=counter.counted(metric_fn), score=task.score, on_step=tracker.log
    )
    edit_seconds = time.perf_counter() - start
    traj.complete(model, edit, report, always=True)  # the oracle-relative metrics of the final and best epochs
    epochs = unlearning.epochs(cfg)
    examples = epochs * len(plan.train_set)  # examples through forward and backward
    row = dict(
        unlearn_form=plan.form,
        edit_epochs=epochs,
        edit_examples=examples,
        n_selected=int(sum(m.sum() for m in plan.mask.values())) if plan.mask else models.n_params(model),
        edit_seconds=edit_seconds,
        report_seconds=traj.report_seconds,
        eval_forwards=counter.examples,
        edit_example_grads=cost.unlearning_gradients(examples=examples, forwards=counter.examples, unit=unit),
        **_unit_fields(unit),
    )
    return traj, row


def _edit(
    prepared: pipeline.Prepared,
    before_val_acc: float,
    retrained: dict[str, float],
    reference: Reference,
    tracker,
    run_id: str,
    unit: cost.UnitCosts,
) -> dict:
    """Edit the model with ``cfg.method`` (an influence update or a fine-tuning unlearner); the
    row's fields for the final and best iterates and the edit's cost."""
    cfg, model, edit, dataset = prepared.cfg, prepared.model, prepared.edit, prepared.dataset
    task = TASKS[cfg.task.name]
    reported, metric_fn = task.reported, task.metrics
    update = _update_by_unlearning if METHODS[cfg.method.name].unlearn is not None else _update_by_influence
    report = _reporting(metric_fn, reference, int(cfg.seed))
    traj, row = update(cfg, model, edit, dataset, metric_fn, before_val_acc, tracker, unit, report)
    row.update(rows.prefixed("final", traj.final, (*reported, *KEYS)))  # unprefixed: the final iterate
    row.update(rows.prefixed("best", traj.best, (*reported, *KEYS)))  # best_: the best on validation
    row.update(
        gap_to_retrain=metrics.gap(traj.final, retrained, cfg.task.name),
        best_gap_to_retrain=metrics.gap(traj.best, retrained, cfg.task.name),
        steps=traj.final["step"],
        best_step=traj.best["step"],
        reached_threshold=traj.reached_threshold,
        stop_reason=traj.stop_reason,
        update_seconds=row["edit_seconds"],
        # test metrics where evaluated: every update.eval_every steps, the final and the best
        trajectory=[{k: s[k] for k in task.trajectory if k in s and not math.isnan(s[k])} for s in traj.steps],
    )
    if cfg.save_edited:
        final_state = {k: v.detach() for k, v in model.state_dict().items()}
        best_state = {**final_state, **traj.best_state}
        folder = Path(cfg.paths.root) / "edited" / str(cfg.name) / run_id
        storage.save_torch(folder / "final.pt", final_state)
        storage.save_torch(folder / "best.pt", best_state)
        row["edited_dir"] = str(folder)
    return row


def run(cfg: DictConfig) -> dict[str, Any]:
    """Validate, train or load, edit, evaluate, and record one configuration.

    Returns the result row (also written atomically to ``rows.row_path(cfg)``). A finished
    ``ok`` row is returned as is unless ``cfg.force``. A run that fails writes its ``failed`` row
    and raises :class:`~gif_bench.errors.RunFailed` (or the :class:`UserError` that stopped it).
    """
    if (why := study.prepare(cfg)) is not None:  # a pair of the solver study's sweep that is not a run
        log.info("skipped: %s", why)
        return {"status": "skipped", "reason": why}
    validate(cfg)
    canonicalize(cfg)
    if not cfg.force and (done := rows.finished(cfg)) is not None:
        log.info("already done, skipping (force=true to re-run): %s", rows.row_path(cfg))
        return done
    started = time.perf_counter()
    device = resolve_device(cfg.device)
    if device.type == "cuda":  # jobs of a sweep share the process: measure this one alone
        torch.cuda.reset_peak_memory_stats(device)
    prepared = pipeline.prepare(cfg, device)
    row = {**base_row(cfg, device), **study.row_fields(cfg)}  # the solver study's variant (nothing outside it)
    tracker = tracking.start(
        Logger.of(OmegaConf.to_container(cfg.logger, resolve=True)),
        Path(cfg.paths.root),
        str(cfg.name),
        config=OmegaConf.to_container(cfg, resolve=True),
        job_type=cfg.method.name,
        name=f"{cfg.task.name}-{cfg.method.name}-{cfg.selector.name}-mr{cfg.mr}-s{cfg.seed}",
    )
    row["wandb_run_id"] = tracker.run_id
    failure: Exception | None = None
    try:
        _fill(row, prepared, tracker)
        row["status"] = "ok"
    except Exception as err:
        row.update(status="failed", error=f"{type(err).__name__}: {err}")
        failure = err
    finally:
        row["peak_memory_mb"] = _peak_memory_mb(device)
        row["total_seconds"] = time.perf_counter() - started
        tracker.summary({k: v for k, v in row.items() if k != "trajectory"})
        row["wandb_error"] = tracker.error  # W&B mirrors the row; its failures never lose it
        path = rows.write_row(cfg, row)
        tracker.finish(exit_code=0 if row["status"] == "ok" else 1)
    if failure is not None:
        if isinstance(failure, UserError):
            raise failure  # the user's to fix (data missing, …): one line, as before the run
        raise RunFailed(f"{row['error']} (its row: {path})") from failure
    _log_result(row, path)
    return row


def _fill(row: dict[str, Any], prepared: pipeline.Prepared, tracker) -> None:
    """The row's fields: the trained model, the oracle, the model before the edit, and the
    edit's result (or, for ``method=retrain``, the oracle's)."""
    cfg, edit, model = prepared.cfg, prepared.edit, prepared.model
    task, method = TASKS[cfg.task.name], METHODS[cfg.method.name]
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
        reference = Reference.of(oracle.model, edit)
        as_oracle = against_oracle(oracle.model, edit, reference, int(cfg.seed))
    before = _reporting(task.metrics, reference, int(cfg.seed))(model, edit)
    row.update(rows.prefixed("before", before, (*task.reported, *KEYS)))
    tracker.log({k: before[k] for k in task.reported}, step=0)
    row.update(rows.prefixed("retrain", retrained, task.reported))
    retrain_gradients = cost.retrain_gradients(int(cfg.train.epochs), len(edit.retrain_set()))
    row.update(
        retrain_seconds=oracle.seconds,  # as recorded when it was trained, also when loaded
        retrain_cached=oracle.cached,
        retrain_example_grads=retrain_gradients,
        retrain_mia_efficacy=as_oracle["mia_efficacy"],  # the target; its KL and agreement are trivial
    )
    if method.oracle:
        row.update(_oracle_as_result(retrained, as_oracle, task.reported, oracle.seconds, retrain_gradients))
    else:
        unit = _unit_costs(cfg, model, edit)
        row.update(_edit(prepared, before["val_acc"], retrained, reference, tracker, row["run_id"], unit))
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
