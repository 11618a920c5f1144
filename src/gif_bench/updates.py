"""An edit's update, for a row or a tuning trial: :func:`by_influence` selects, solves and steps
along the direction; :func:`by_unlearning` trains an unlearner's plan. Each returns the
trajectory and the row's cost fields (:mod:`gif_bench.cost`)."""

from __future__ import annotations

import dataclasses
import time
from typing import Any

from . import cost, editing, line_search, models, storage, study, tasks, unlearning
from .errors import EditDiverged, TrainingDiverged
from .influence import tree
from .methods import METHODS
from .settings import Run
from .tasks import TASKS


def unit_costs(run: Run, model, edit: tasks.Edit) -> cost.UnitCosts:
    """One example's gradient and forward, timed on a batch of the Hessian sample's size (before
    the edit's clock starts)."""
    n = min(run.hessian.samples, edit.m)
    x, y = edit.train_set.x[:n], edit.train_set.y[:n]
    return cost.unit_costs(model, x, y)


def unit_fields(unit: cost.UnitCosts) -> dict[str, float]:
    return dict(example_gradient_seconds=unit.gradient, forward_gradient_ratio=unit.forward_ratio)


def solve_fields(direction: editing.Direction) -> dict[str, Any]:
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


# A tuning study's directions, by everything that poses the problem (all but the step settings
# and the study's name): its trials run in one process (Hydra's Optuna sweeper, basic launcher),
# and a trial that changes only γ steps along the direction an earlier trial solved, as the
# method would for any γ. The study's cost then counts that solve once (gif_bench.tune).
_STUDY_SOLVES: dict[str, editing.Direction] = {}
NOT_IN_THE_PROBLEM = ("update", "tune", "tuning")


def _first_direction(run: Run, method, model, edit) -> tuple[editing.Direction, bool]:
    """The run's first direction, and whether a tuning trial took it from an earlier trial of
    its study (its seconds then 0: this trial did not solve)."""
    if not run.tune:
        return editing.influence_direction(run, method, model, edit, stored=study.stored_solve(run, edit)), False
    key = storage.digest({k: v for k, v in run.fingerprint.items() if k not in NOT_IN_THE_PROBLEM})
    if (solved := _STUDY_SOLVES.get(key)) is not None:
        delta = {k: v.clone() for k, v in solved.delta.items()}
        info = dataclasses.replace(solved.info, hvps=0)  # no product of this trial's
        return dataclasses.replace(solved, delta=delta, info=info, seconds=0.0, solve_seconds=0.0), True
    first = editing.influence_direction(run, method, model, edit)
    _STUDY_SOLVES.clear()  # one is enough: a study's trials differ only in γ, or in what the next solves
    _STUDY_SOLVES[key] = dataclasses.replace(first, delta={k: v.clone() for k, v in first.delta.items()}, problem=None)
    return first, False


def by_influence(run: Run, model, edit, dataset, metric_fn, before_val_acc: float, tracker, unit, report):
    """Select, solve and step along the direction (recomputed every ``update.recompute_every``
    steps); the trajectory and the row's cost fields (:mod:`gif_bench.cost`)."""
    task = TASKS[run.task.name]
    counter = cost.ForwardCounter()
    start = time.perf_counter()
    method = METHODS[run.method.name]
    first, reused = _first_direction(run, method, model, edit)
    row: dict[str, Any] = {**solve_fields(first), "solve_reused": reused}
    # Not the edit's own time: the solver study's measurements of Δθ (made before the steps move
    # θ̂), less a stored solve's seconds (counted as when it was solved, as a loaded oracle's are).
    not_the_edit = -first.solve_seconds if first.stored else 0.0
    if study.wants_references(run):
        measuring = time.perf_counter()
        row.update(study.reference_fields(run, edit, first))
        row["reference_seconds"] = time.perf_counter() - measuring
        not_the_edit += row["reference_seconds"]
    directions = [first]

    def recompute(_step: int) -> dict:
        directions.append(editing.influence_direction(run, method, model, edit, mask=first.mask))
        return directions[-1].delta

    update = run.update
    common = dict(
        rate=update.rate,
        max_steps=update.max_steps,
        stop=lambda m: task.stop(m, run.task.options),
        metric_fn=metric_fn,  # the test splits: the row's, not the edit's (uncounted, report_seconds)
        decide=counter.counted(lambda model, edit: metric_fn(model, edit, only=task.decides_on)),
        score=task.score,
        collapse_below=before_val_acc - update.max_val_drop,
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
            eval_every=update.eval_every,
            recompute_every=update.recompute_every,
            recompute=recompute,
            stall_boost=update.stall_boost,
            stall_patience=update.stall_patience,
        )
    search_seconds = traj.seconds - traj.report_seconds
    edit_seconds = time.perf_counter() - start - not_the_edit - traj.report_seconds
    hvps = sum(d.info.hvps for d in directions)
    gradients, rho_hvp = cost.influence_gradients(
        hvps=hvps,
        hessian_samples=run.hessian.samples,
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
        **unit_fields(unit),
    )
    return traj, row


def by_unlearning(run: Run, model, edit, dataset, metric_fn, before_val_acc: float, tracker, unit, report):
    """Train the method's :class:`~gif_bench.unlearning.Plan`; the trajectory (one step per
    epoch) and the row's cost fields (:mod:`gif_bench.cost`)."""
    task, method = TASKS[run.task.name], METHODS[run.method.name]
    counter = cost.ForwardCounter()
    start = time.perf_counter()
    plan = method.unlearn(run, model, edit, dataset)
    try:
        traj = unlearning.unlearn(
            run, model, edit, dataset, plan, metric_fn=counter.counted(metric_fn), score=task.score, on_step=tracker.log
        )
    except TrainingDiverged as err:  # the method's edit diverged, not the user's training recipe
        what = str(err).split("; the recipe is unstable")[0]
        raise EditDiverged(f"{what}; the edit diverges at these settings (method.lr_factor, method.epochs)") from err
    edit_seconds = time.perf_counter() - start
    traj.complete(model, edit, report, always=True)  # the oracle-relative metrics of the final and best epochs
    epochs = unlearning.epochs(run)
    examples = unlearning.examples(run, plan)  # examples through forward and backward
    row = dict(
        unlearn_form=plan.form,
        edit_epochs=epochs,
        edit_examples=examples,
        n_selected=int(sum(m.sum() for m in plan.mask.values())) if plan.mask else models.n_params(model),
        edit_seconds=edit_seconds,
        report_seconds=traj.report_seconds,
        eval_forwards=counter.examples,
        edit_example_grads=cost.unlearning_gradients(
            examples=examples, forwards=counter.examples + unlearning.forwards(run, plan), unit=unit
        ),
        **unit_fields(unit),
    )
    return traj, row


def of(run: Run):
    """The update of ``run``'s method: :func:`by_unlearning` or :func:`by_influence`."""
    return by_unlearning if METHODS[run.method.name].unlearn is not None else by_influence
