"""A tuning trial: one edit judged on validation alone, with the test splits and the oracle
withheld.

``python -m gif_bench.tune`` searches each method's space (``MethodSpec.space``) with Hydra's
Optuna sweeper; every trial is a run with ``tune=<study>`` on a tuning seed
(:data:`FIRST_SEED` and up, apart from the evaluation seeds). Its objective is the task's own
validation score (the first key of ``TaskSpec.score``, which the best-iterate rule ranks by) at
the edit's final iterate, the one a table reports.

What a trial may read is enforced, not trusted: every evaluation set outside the task's
``decides_on`` (the test splits, the removed class's test images, the attack images) and the
dataset's test split are replaced by :class:`~gif_bench.data.Withheld` splits that raise
:class:`~gif_bench.errors.WithheldData` when read, and :func:`gif_bench.pipeline.retrained`
raises it for the oracle. A method, task or metric that reaches for either fails the trial loudly.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any

from . import models, pipeline, rows, updates
from .data import Withheld
from .tasks import TASKS

FIRST_SEED = 1000  # tuning seeds are 1000 and up; evaluation seeds stay below
FAILED_OBJECTIVE = -1e6  # a failed trial's score, below every objective's range ([-100, 1])
TRIAL_FILE = "trial.json"  # each trial's summary, in its Hydra job folder (gif_bench.tune reads them)
TRIAL_KEYS = ("status", "objective", "run_id", "edit_seconds", "trial_seconds", "steps", "stop_reason")


def objective(metrics: dict[str, float], task_name: str) -> float:
    """The trial's objective: the task's best-iterate score's first key (``val_f1`` for class
    removal, label change and the backdoor; −|U's accuracy − validation accuracy| for random
    removal), from validation and U alone."""
    return float(TASKS[task_name].score(metrics)[0])


def withhold(prepared: pipeline.Prepared) -> pipeline.Prepared:
    """``prepared`` with every evaluation set the task's decisions do not read, and the dataset's
    test split, replaced by :class:`Withheld` splits."""
    decides_on = TASKS[prepared.run.task.name].decides_on
    edit = prepared.edit
    sets = {name: split if name in decides_on else Withheld(name) for name, split in edit.eval_sets.items()}
    return dataclasses.replace(
        prepared,
        edit=dataclasses.replace(edit, eval_sets=sets),
        dataset=dataclasses.replace(prepared.dataset, test=Withheld("test")),
    )


def fill(row: dict[str, Any], prepared: pipeline.Prepared, tracker) -> None:
    """A trial's row: the trained model (on the tuning seed), the edit judged on the task's
    ``decides_on`` sets alone, its cost and the :func:`objective`."""
    prepared = withhold(prepared)
    run, model, edit, dataset = prepared.run, prepared.model, prepared.edit, prepared.dataset
    task = TASKS[run.task.name]
    trained = pipeline.trained(prepared)
    row.update(n_params=models.n_params(model), n_train=edit.m, n_removed=edit.u, train_seconds=trained.seconds)

    def judged(model, edit, only=None) -> dict[str, float]:
        return task.metrics(model, edit, only=task.decides_on)

    before = judged(model, edit)
    row.update(rows.prefixed("before", before, ("val_acc", "self_acc")))
    started = time.perf_counter()
    unit = updates.unit_costs(run, model, edit)
    traj, fields = updates.of(run)(run, model, edit, dataset, judged, before["val_acc"], tracker, unit, judged)
    row.update(fields)
    row.update(rows.prefixed("final", traj.final, ("val_acc", "self_acc", "val_f1")))
    row.update(
        steps=traj.final["step"],
        stop_reason=traj.stop_reason,
        objective=objective(traj.final, run.task.name),
        trial_seconds=time.perf_counter() - started,
    )
