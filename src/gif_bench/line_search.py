"""Stepping along a fixed direction until the edit holds: the paper's every-step search and a
bracketing one, each evaluating only what its decisions read.

Iterate t is θ_t = θ̂ + t·γ·u, u = Δθ/‖Δθ‖. The search stops at the first t where the task's
stop rule holds (``threshold``) or where validation accuracy has fallen below
``collapse_below`` (``collapse``, checked first), and keeps the first iterate of the highest
score (the *best*). Stop rule, collapse check and score read only U and validation (a task's
``decides_on``), so every visited iterate is evaluated on those alone (``decide``); the test
splits are evaluated (``full``) only at the iterates a row reports, the final and the best,
and every ``eval_every`` steps for the trajectory plot. The final and best metrics are those
an every-step full evaluation gives (tests/test_line_search.py).

* ``linear`` (the paper's): t = 1, 2, 3, … Every iterate is visited.
* ``bracket``: t = 1, 2, 4, … until the stop rule or the collapse check holds (or t reaches
  ``max_steps``), then bisection between the last t where neither held and the first where one
  did, for the first such t to within one step: about 2·log₂ t evaluations instead of t.
  It finds the same t as ``linear`` when "stop or collapse" holds from some t on and never
  before (monotone along the ray). It need not be: U's accuracy can dip below the threshold and
  come back (a class is forgotten, then half-relearnt by the growing step), and validation can
  dip and recover. Then ``bracket`` may stop at a later crossing than ``linear`` or miss a
  narrow dip altogether, and its best iterate is the best of fewer iterates. Measured on
  table1 of the CPU profile, paired: docs/results/cpu/line_search-cpu.md.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from . import metrics
from .influence import tree
from .tasks.spec import validation_f1

if TYPE_CHECKING:
    from .edit import Edit

MetricFn = Callable[[nn.Module, "Edit"], dict[str, float]]
SEARCHES = ("linear", "bracket")


@dataclass
class Trajectory:
    """The evaluated iterates in step order (``steps``), the final one (``final``, where the
    model is left) and the best one with its parameters."""

    steps: list[dict[str, float]] = field(default_factory=list)
    best: dict[str, float] | None = None
    best_state: dict[str, Tensor] | None = None  # parameters of the best iterate
    reached_threshold: bool = False
    # threshold (the task's stop rule held) | collapse | max_steps | epochs | done (training-free)
    stop_reason: str = "max_steps"
    seconds: float = 0.0
    boosts: int = 0  # times the rate was multiplied by stall_boost
    final_step: int | None = None  # the final iterate's step (None: the last of ``steps``)
    report_seconds: float = 0.0  # of ``seconds``: evaluations for the row only (test splits, oracle metrics)

    @property
    def final(self) -> dict[str, float]:
        if self.final_step is None:
            return self.steps[-1]
        return next(s for s in self.steps if s["step"] == self.final_step)

    def evaluate(
        self,
        model: nn.Module,
        edit: Edit,
        step: int,
        metric_fn: MetricFn,
        score: Callable[[dict[str, float]], Any],
        on_step: Callable[[dict[str, float], int], Any] | None = None,
    ) -> dict[str, float]:
        """Evaluate ``model`` as iterate ``step``, append it, and keep it (with its parameters)
        if it is the first of the highest ``score`` so far."""
        metrics = {"step": step, **metric_fn(model, edit)}
        self.steps.append(metrics)
        if on_step is not None:
            on_step({k: v for k, v in metrics.items() if not _missing(v)}, step)
        if self.best is None or score(metrics) > score(self.best):
            self.best = metrics
            self.best_state = {k: v.detach().clone() for k, v in model.named_parameters()}
        return metrics

    def complete(self, model: nn.Module, edit: Edit, report: MetricFn, always: bool = False) -> None:
        """Evaluate the final and the best iterate with ``report`` (in place): where only the
        decisions' splits were evaluated, or at both with ``always`` (a ``report`` that adds
        metrics of its own, as the runner's oracle-relative ones). Timed in ``report_seconds``."""
        start = time.perf_counter()
        final = self.final
        if always or _partial(final):
            final.update(report(model, edit))
            final.pop("_partial", None)
        if self.best is not None and self.best is not final and (always or _partial(self.best)):
            with swapped(model, self.best_state):
                self.best.update(report(model, edit))
            self.best.pop("_partial", None)
        self.report_seconds += time.perf_counter() - start


def _missing(value: Any) -> bool:
    return isinstance(value, float) and math.isnan(value)


def _partial(metrics: dict[str, float]) -> bool:
    return bool(metrics.get("_partial"))


class swapped:
    """Context: ``model``'s parameters set to ``state`` and restored on exit."""

    def __init__(self, model: nn.Module, state: dict[str, Tensor] | None) -> None:
        self.params = dict(model.named_parameters())
        self.state = state or {}
        self.kept: dict[str, Tensor] = {}

    def __enter__(self) -> None:
        with torch.no_grad():
            for k, v in self.state.items():
                self.kept[k] = self.params[k].detach().clone()
                self.params[k].copy_(v)

    def __exit__(self, *exc: object) -> None:
        with torch.no_grad():
            for k, v in self.kept.items():
                self.params[k].copy_(v)


@dataclass
class Evaluation:
    """How iterates are evaluated: ``full`` on every split; ``decide`` on the splits the stop
    rule, the collapse check and the score read (``None``: ``full`` at every step, all of it
    the edit's); every ``every`` steps ``full`` all the same, for the trajectory plot, its
    splits beyond ``decide``'s timed as reporting (``reporting_seconds``), not as the edit."""

    full: MetricFn
    decide: MetricFn | None = None
    every: int = 1
    reporting_seconds: float = 0.0

    def at(self, step: int) -> MetricFn:
        decide = self.decide
        if decide is None:
            return self.full
        if step % self.every:

            def partial(model: nn.Module, edit: Edit) -> dict[str, float]:
                return {**decide(model, edit), "_partial": True}

            return partial

        def both(model: nn.Module, edit: Edit) -> dict[str, float]:
            with metrics.shared_logits():  # full reuses decide's logits: its own time is the test splits'
                decide(model, edit)
                start = time.perf_counter()
                out = self.full(model, edit)
                self.reporting_seconds += time.perf_counter() - start
            return out

        return both


def _unit(direction: dict[str, Tensor]) -> dict[str, Tensor]:
    norm = tree.norm(direction)
    if not math.isfinite(norm) or norm == 0.0:
        raise RuntimeError(f"the influence direction has norm {norm}; nothing to apply")
    return tree.scale(direction, 1.0 / norm)


def _finish(
    traj: Trajectory, model: nn.Module, edit: Edit, evaluation: Evaluation, report: MetricFn | None, start: float
) -> Trajectory:
    traj.complete(model, edit, report or evaluation.full, always=report is not None)
    for s in traj.steps:
        s.pop("_partial", None)
    traj.report_seconds += evaluation.reporting_seconds
    traj.seconds = time.perf_counter() - start
    return traj


def apply_updates(
    model: nn.Module,
    edit: Edit,
    delta: dict[str, Tensor],
    *,
    rate: float,
    max_steps: int,
    stop: Callable[[dict[str, float]], bool],
    metric_fn: MetricFn,
    score: Callable[[dict[str, float]], Any] = validation_f1,
    on_step: Callable[[dict[str, float], int], Any] | None = None,
    collapse_below: float = -math.inf,
    recompute_every: int | None = None,
    recompute: Callable[[int], dict[str, Tensor]] | None = None,
    stall_boost: float | None = None,
    stall_patience: int = 10,
    decide: MetricFn | None = None,
    eval_every: int = 1,
    report: MetricFn | None = None,
) -> Trajectory:
    """The paper's search: θ ← θ + rate · Δθ/‖Δθ‖, evaluating after every step, until
    ``stop(metrics)`` (stop reason ``threshold``), until the validation accuracy falls below
    ``collapse_below`` (``collapse``: the edit is destroying the model), or for ``max_steps``
    steps. ``metric_fn`` evaluates every split; with ``decide`` (the stop rule's, the collapse
    check's and the score's splits only) the steps are evaluated by ``decide`` and by
    ``metric_fn`` only every ``eval_every`` steps and at the final and best iterates; with
    ``report``, the final and best iterates are evaluated by it instead, whatever they were
    (:meth:`Trajectory.complete`). The test splits' and ``report``'s evaluations are the row's,
    not the edit's: ``Trajectory.report_seconds`` times them.

    The model is left at the final iterate; the best iterate is the first one of the highest
    ``score`` (the task's; by default the validation F1), and its parameters are kept in
    ``Trajectory.best_state``.

    Iterative editing: with ``recompute_every=N``, after every N-th step Δθ is replaced by
    ``recompute(step)`` (the direction re-linearised at the current iterate). With
    ``stall_boost=c``, the rate is multiplied by c whenever progress stalls: U's accuracy
    (``self_acc``) is no lower than it was ``stall_patience`` steps before (the paper's "γ × 5
    when progress stalls"); the stall window then starts again.
    """
    if recompute_every is not None and (recompute is None or recompute_every < 1):
        raise ValueError("recompute_every needs a positive interval and a recompute function")
    evaluation = Evaluation(metric_fn, decide, eval_every)
    unit = _unit(delta)
    traj = Trajectory()
    since_boost = 0
    start = time.perf_counter()
    bar = tqdm(range(1, max_steps + 1), desc="update", unit="step", leave=False, dynamic_ncols=True)
    for step in bar:
        with torch.no_grad():
            for name, p in model.named_parameters():
                p.add_(unit[name], alpha=rate)
        metrics = traj.evaluate(model, edit, step, evaluation.at(step), score, on_step)
        bar.set_postfix(self_acc=f"{metrics['self_acc']:.2f}", val_acc=f"{metrics['val_acc']:.2f}")
        traj.reached_threshold = stop(metrics)
        if metrics["val_acc"] < collapse_below:  # checked first: forgetting by wrecking the model is a collapse
            traj.stop_reason = "collapse"
            break
        if traj.reached_threshold:
            traj.stop_reason = "threshold"
            break
        since_boost += 1
        if stall_boost is not None and since_boost >= stall_patience and len(traj.steps) > stall_patience:
            if metrics["self_acc"] >= traj.steps[-1 - stall_patience]["self_acc"]:
                rate *= float(stall_boost)
                traj.boosts += 1
                since_boost = 0
        if recompute_every is not None and step % recompute_every == 0 and step < max_steps:
            unit = _unit(recompute(step))
    bar.close()
    return _finish(traj, model, edit, evaluation, report, start)


def bracket_updates(
    model: nn.Module,
    edit: Edit,
    delta: dict[str, Tensor],
    *,
    rate: float,
    max_steps: int,
    stop: Callable[[dict[str, float]], bool],
    metric_fn: MetricFn,
    score: Callable[[dict[str, float]], Any] = validation_f1,
    on_step: Callable[[dict[str, float], int], Any] | None = None,
    collapse_below: float = -math.inf,
    decide: MetricFn | None = None,
    report: MetricFn | None = None,
) -> Trajectory:
    """The bracketing search (module doc): θ_t = θ̂ + t · rate · Δθ/‖Δθ‖ at t = 1, 2, 4, … until
    ``stop`` holds or validation accuracy is below ``collapse_below`` (or t = ``max_steps``),
    then bisection for the first such t. Arguments, stop reasons and the trajectory as
    :func:`apply_updates` (its ``steps`` are the evaluated iterates in step order); the model
    is left at the final iterate."""
    evaluation = Evaluation(metric_fn, decide, every=max_steps + 1)  # full only where reported
    unit = _unit(delta)
    params = dict(model.named_parameters())
    origin = {k: v.detach().clone() for k, v in params.items()}
    traj = Trajectory()
    seen: dict[int, dict[str, float]] = {}
    start = time.perf_counter()
    bar = tqdm(total=max_steps, desc="update (bracket)", unit="step", leave=False, dynamic_ncols=True)

    def move(t: int) -> None:
        with torch.no_grad():
            for k, p in params.items():
                p.copy_(origin[k] + (t * rate) * unit[k])

    def ends(t: int) -> bool:  # the stop rule or the collapse check holds at t
        if t not in seen:
            move(t)
            seen[t] = traj.evaluate(model, edit, t, evaluation.at(t), score)
            bar.update(max(0, t - bar.n))
            bar.set_postfix(step=t, self_acc=f"{seen[t]['self_acc']:.2f}", val_acc=f"{seen[t]['val_acc']:.2f}")
        m = seen[t]
        return m["val_acc"] < collapse_below or stop(m)

    lo, t = 0, 1
    while not ends(t) and t < max_steps:
        lo, t = t, min(2 * t, max_steps)
    hi = t
    if ends(hi):
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if ends(mid):
                hi = mid
            else:
                lo = mid
        final = seen[hi]
        traj.reached_threshold = stop(final)
        traj.stop_reason = "collapse" if final["val_acc"] < collapse_below else "threshold"
    bar.close()
    # The search ends at hi: bisection's points past it (where the stop rule or the collapse
    # check held too) are not iterates of the edit, as the linear search never reaches them.
    traj.steps = sorted((s for s in traj.steps if s["step"] <= hi), key=lambda s: s["step"])
    traj.final_step = hi
    # The best as the linear search picks it: the first (lowest step) of the highest score;
    # its parameters recomputed from t (evaluation order is not step order).
    traj.best = max(traj.steps, key=score)
    move(int(traj.best["step"]))
    traj.best_state = {k: v.detach().clone() for k, v in params.items()}
    move(hi)
    _finish(traj, model, edit, evaluation, report, start)
    if on_step is not None:  # in step order (W&B drops a step lower than one already logged)
        for s in traj.steps:
            on_step({k: v for k, v in s.items() if not _missing(v)}, int(s["step"]))
    return traj
