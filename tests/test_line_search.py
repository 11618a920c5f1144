"""The line search (gif_bench/line_search.py): decisions on U and validation alone, the test
splits only where reported, and the bracketing search against the every-step one."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from gif_bench import config, line_search, models, runner, tasks
from gif_bench import data as datasets
from gif_bench.errors import ConfigError
from gif_bench.tasks import TASKS


def _ray_model() -> nn.Module:
    """One parameter w = 0; the search moves it to w = t·rate along the unit direction +1."""
    model = nn.Linear(1, 1, bias=False)
    with torch.no_grad():
        model.weight.zero_()
    return model


def _w(model: nn.Module) -> float:
    return float(model.weight.detach())


def _along(self_acc, val_acc=lambda t: 90.0, calls=None):
    """Metrics of the iterate t (read back from w with rate 1): U's and validation accuracy as
    functions of t; the test split's accuracy is t itself (so any mix-up shows)."""

    def metric_fn(model, edit, partial=False):
        t = round(float(model.weight.detach()))
        if calls is not None:
            calls.append((t, partial))
        out = {"self_acc": float(self_acc(t)), "val_acc": float(val_acc(t)), "val_f1": 0.0}
        out["val_f1"] = 1.0 - out["self_acc"] / 100.0  # higher as U is forgotten
        out["test_acc"] = math.nan if partial else float(t)
        return out

    return metric_fn, lambda model, edit: metric_fn(model, edit, partial=True)


def _search(kind, self_acc, val_acc=lambda t: 90.0, max_steps=200, calls=None, **kw):
    full, decide = _along(self_acc, val_acc, calls)
    search = line_search.bracket_updates if kind == "bracket" else line_search.apply_updates
    unit = {"weight": torch.ones(1, 1)}
    model = _ray_model()
    traj = search(
        model, None, unit, rate=1.0, max_steps=max_steps, stop=lambda m: m["self_acc"] < 1.0,
        metric_fn=full, decide=decide, collapse_below=50.0, score=lambda m: (m["val_f1"], m["val_acc"]), **kw,
    )  # fmt: skip
    return traj, model


@pytest.mark.parametrize("first", [1, 2, 3, 37, 64, 65, 199, 200])
def test_bracket_finds_the_linear_stop_on_a_monotone_ray_in_logarithmic_evaluations(first):
    falls = lambda t: 100.0 if t < first else 0.5  # noqa: E731
    linear, at_linear = _search("linear", falls)
    calls = []
    bracket, at_bracket = _search("bracket", falls, calls=calls)
    assert bracket.final["step"] == linear.final["step"] == first
    assert bracket.stop_reason == linear.stop_reason == "threshold" and bracket.reached_threshold
    assert _w(at_bracket) == _w(at_linear) == first  # left at the final iterate
    assert bracket.best["step"] == linear.best["step"] == first
    assert len(bracket.steps) <= 2 * math.ceil(math.log2(first + 1)) + 1
    assert [s["step"] for s in bracket.steps] == sorted({s["step"] for s in bracket.steps})
    assert bracket.final["test_acc"] == linear.final["test_acc"] == first  # the final is evaluated in full


def test_bracket_checks_the_collapse_at_every_point_and_reports_it_first():
    # validation collapses from t = 20 on, U is forgotten from t = 30 on: both stop at 20, a collapse
    linear, _ = _search("linear", lambda t: 100.0 if t < 30 else 0.0, val_acc=lambda t: 90.0 if t < 20 else 10.0)
    bracket, _ = _search("bracket", lambda t: 100.0 if t < 30 else 0.0, val_acc=lambda t: 90.0 if t < 20 else 10.0)
    assert bracket.final["step"] == linear.final["step"] == 20
    assert bracket.stop_reason == linear.stop_reason == "collapse" and not bracket.reached_threshold


def test_bracket_ends_at_max_steps_when_nothing_holds():
    traj, model = _search("bracket", lambda t: 100.0, max_steps=50)
    assert traj.stop_reason == "max_steps" and traj.final["step"] == 50 and _w(model) == 50
    assert [s["step"] for s in traj.steps] == [1, 2, 4, 8, 16, 32, 50]


def test_bracket_can_miss_a_dip_that_the_linear_search_stops_at():
    """U's accuracy along the ray need not be monotone (the module doc): a dip at t = 3 only."""
    dip = lambda t: 0.0 if t == 3 or t >= 40 else 100.0  # noqa: E731
    linear, _ = _search("linear", dip)
    bracket, _ = _search("bracket", dip)
    assert linear.final["step"] == 3
    assert bracket.final["step"] == 40  # 1, 2, 4, …, 32, 64, then bisection between 32 and 64


def test_bracket_best_is_the_first_of_the_highest_score_with_its_parameters():
    # U's accuracy 50 at t = 4..7 (the same score), forgotten from 9: the best before the final is t = 4
    acc = lambda t: 100.0 if t < 4 else (50.0 if t < 8 else (20.0 if t == 8 else 0.0))  # noqa: E731
    traj, model = _search("bracket", acc, val_acc=lambda t: 90.0)
    assert traj.final["step"] == 9 and _w(model) == 9
    assert traj.best["step"] == 9  # the final forgets most
    partial = _search("bracket", lambda t: 50.0 if t >= 4 else 100.0, max_steps=7)[0]
    assert partial.best["step"] == 4  # 4 and 7 tie on the score: the first
    assert float(partial.best_state["weight"]) == 4.0  # its parameters, recomputed from t


def test_bracket_points_past_the_final_are_not_iterates():
    """Bisection evaluates points past the first stop (here 60 and 64): the linear search never
    reaches them, so they are neither in the trajectory nor the best, though U is forgotten more."""
    acc = lambda t: 100.0 if t < 58 else (0.5 if t == 58 else 0.0)  # noqa: E731
    calls = []
    traj, _ = _search("bracket", acc, calls=calls)
    assert {60, 64} <= {t for t, _ in calls}
    assert traj.final["step"] == traj.best["step"] == 58 and max(s["step"] for s in traj.steps) == 58
    assert float(traj.best_state["weight"]) == 58.0
    logged = []
    _search("bracket", acc, on_step=lambda metrics, step: logged.append((step, "test_acc" in metrics)))
    steps = [step for step, _ in logged]
    assert steps == sorted(steps) and steps[-1] == 58  # in step order, as W&B needs, and only iterates
    assert logged[-1][1] and not logged[0][1]  # the final with its test metrics, the rest without (NaN dropped)


def test_the_linear_search_evaluates_test_splits_only_where_reported():
    calls = []
    falls = lambda t: 100.0 if t < 23 else 0.5  # noqa: E731
    traj, _ = _search("linear", falls, calls=calls, eval_every=10)
    full = sorted({t for t, partial in calls if not partial})
    assert full == [10, 20, 23]  # every 10 steps, and the final (= best) once more in full
    assert [t for t, partial in calls if partial] == list(range(1, 24))  # the decisions' splits at every step
    assert traj.final["test_acc"] == 23 and traj.best["test_acc"] == 23
    assert math.isnan(traj.steps[0]["test_acc"]) and traj.steps[9]["test_acc"] == 10
    assert all("_partial" not in s for s in traj.steps)


@pytest.mark.parametrize("task", list(TASKS))
def test_every_task_decides_on_its_declared_splits_alone(task, make_run):
    """Each task's stop rule, score and collapse check read the same values from a ``decides_on``
    evaluation as from a full one (a rule reading a test split would see NaN and differ)."""
    run = make_run(f"task={task}", drop=("task",))
    data = datasets.load(run.dataset, run.paths.data, torch.device("cpu"))
    edit = tasks.build(run.task, data)
    torch.manual_seed(0)
    model = models.build(run.model, data.in_channels, data.num_classes, run.dataset.image_size)
    spec = TASKS[task]
    full = spec.metrics(model, edit)
    decided = spec.metrics(model, edit, only=spec.decides_on)
    assert spec.stop(decided, run.task.options) == spec.stop(full, run.task.options)
    assert spec.score(decided) == spec.score(full)
    assert decided["val_acc"] == full["val_acc"] and decided["self_acc"] == full["self_acc"]
    assert math.isnan(decided["test_acc"])  # the test split was not evaluated


@pytest.mark.parametrize("task", ["class_removal", "backdoor"])
def test_final_and_best_equal_those_of_an_every_step_evaluation(task, make_cfg, tmp_path):
    # Twelve steps whatever happens; on these weights validation accuracy moves along the ray, so
    # the best iterate is neither the final one nor one of the every-5-steps evaluations.
    never_stop = ("update.max_steps=12", "task.stop_self_acc=0", "update.max_val_drop=100", f"task={task}")
    never_stop += ("train.epochs=10",)
    drop = () if task == "class_removal" else ("task",)
    every = runner.run(make_cfg(*never_stop, "update.eval_every=1", root=tmp_path / "every", drop=drop))
    sparse = runner.run(make_cfg(*never_stop, "update.eval_every=5", root=tmp_path / "sparse", drop=drop))
    # Everything but the cost of evaluating (and what records it) is the same.
    costs = ("seconds", "example_grads", "speedup", "_ratio", "peak_memory", "eval_every")
    differ = {"run_id", "trajectory", "git_sha", "wandb_run_id", "model_cached", "retrain_cached"}
    for key in every:
        if key in differ or any(c in key for c in costs):
            continue
        same = every[key] == sparse[key] or (isinstance(every[key], float) and math.isnan(every[key]))
        assert same, (key, every[key], sparse[key])
    assert every["eval_forwards"] == sparse["eval_forwards"]  # the edit's own: U and validation at each step
    assert every["report_seconds"] > sparse["report_seconds"]  # the row's: the test splits at every step
    for a, b in zip(every["trajectory"], sparse["trajectory"]):
        assert {k: a[k] for k in b} == b  # the same values where both evaluated
    tested = {s["step"] for s in sparse["trajectory"] if "test_acc" in s}
    assert tested == {5, 10, 12, sparse["best_step"]} and len(sparse["trajectory"]) == 12
    if task == "class_removal":
        assert sparse["best_step"] not in (5, 10, 12)  # the best's test metrics were evaluated for it


def test_bracket_runs_end_to_end_and_records_its_search(make_cfg):
    row = runner.run(make_cfg("update.search=bracket", "update.max_steps=8", "task.stop_self_acc=0"))
    assert row["status"] == "ok" and row["search"] == "bracket" and row["steps"] == 8
    assert [s["step"] for s in row["trajectory"]] == [1, 2, 4, 8]
    assert 0 < row["search_seconds"] <= row["edit_seconds"]


@pytest.mark.parametrize(
    "override, key",
    [
        ("update.search=golden", "update.search=golden"),
        ("update.eval_every=0", "update.eval_every=0"),
        ("update.stall_boost=5", "update.stall_boost=5"),
        ("update.recompute_every=3", "update.recompute_every=3"),
    ],
)
def test_bad_search_settings_are_refused_in_one_line(override, key, make_cfg):
    extra = ["update.search=bracket"] if "search" not in override else []
    with pytest.raises(ConfigError, match=f"^{key}") as err:
        runner.run(make_cfg(*extra, override))
    assert "\n" not in str(err.value)


def test_run_ids_are_those_of_before_the_search_options(make_cfg):
    """``update.search=linear`` and any ``update.eval_every`` hash as a config without them (the
    rows made before they existed keep their ids); ``bracket`` is another computation."""
    from omegaconf import open_dict

    before = make_cfg()
    with open_dict(before):
        del before["update"]["search"], before["update"]["eval_every"]
    assert config.run_id(make_cfg()) == config.run_id(make_cfg("update.eval_every=1")) == config.run_id(before)
    assert config.run_id(make_cfg("update.search=bracket")) != config.run_id(before)
