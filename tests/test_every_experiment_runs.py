"""Every promised path runs end to end: each experiment, in both profiles, with every method of its
grid, on its own settings (solver, recipe, model, task, rate, stop rule) with only the data, the
width, the epochs, the iterations, the steps and the Hessian sample shrunk. The paper profile of
table1 and fig3 forms Hessian products as configured (traced once per solve: every method, every
selector); every other run in reverse mode (every method again, each task), since five-iteration
solves on a tiny network do not repay a trace of seconds for products of milliseconds."""

import json

import pytest
from conftest import run_cli, synthetic_like

from gif_bench import runner, sweeps
from gif_bench.methods import METHODS

EXPERIMENTS = ("quickstart", "table1", "fig3", "table2", "label_change", "random_removal")
PROFILES = ("paper", "cpu")
TRACED = {("table1", "paper"), ("fig3", "paper")}  # as configured; the others in reverse mode


def _shrunk(cfg, experiment: str, profile: str) -> list[str]:
    """Value overrides that make ``cfg`` tiny and keep everything else: a 1/16-width network,
    one epoch, five solver iterations (LiSSA's power iteration too), three update steps, 32
    Hessian and selector examples; reverse-mode products outside :data:`TRACED`."""
    shrink = [
        "model.width=0.0625",
        "train.epochs=1",
        "hessian.samples=32",
        "selector.samples=32",
        "update.max_steps=3",
    ]
    if (experiment, profile) not in TRACED:
        shrink.append("hessian.product=reverse")
    if "max_iter" in cfg.solver:
        shrink.append("solver.max_iter=5")
    if "power_iters" in cfg.solver:
        shrink.append("solver.power_iters=2")
    if "lissa" in cfg.method:  # koh's and second-order's own LiSSA depth
        shrink.append("method.lissa.max_iter=5")
    if "epochs" in cfg.method:  # a fine-tuning unlearner's recipe
        shrink.append("method.epochs=1")
    if "iterations" in cfg.method:  # Arnoldi's Krylov dimension (profile=cpu sets it for every method)
        shrink.append("method.iterations=5")
    if "rank" in cfg.method:
        shrink.append("method.rank=2")
    return shrink


def _one_job_per_method(experiment: str, profile: str) -> list[list[str]]:
    """The first job of the experiment's sweep for each method in it (composing only the sweep's
    parameters, not each of its jobs)."""
    first: dict[str | None, list[str]] = {}
    for job in sweeps.sweep_jobs([f"experiment={experiment}", f"profile={profile}"]):
        first.setdefault(job_method(job), job)
    return list(first.values())


def job_method(job: list[str]) -> str | None:
    return next((o.split("=", 1)[1] for o in job if o.startswith("method=")), None)


@pytest.mark.parametrize("profile", PROFILES)
@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_every_method_of_every_experiment_writes_an_ok_row(experiment, profile, tmp_path):
    base = [f"experiment={experiment}", f"profile={profile}", f"paths.root={tmp_path}"]
    jobs = _one_job_per_method(experiment, profile)
    expected = {"quickstart": 1, "fig3": 1}.get(experiment, len(METHODS))  # the tables run every method
    assert len(jobs) == expected, jobs
    # One composition per method: the shrink's value overrides reuse its defaults tree (see
    # sweeps._composer). The experiment's own settings are its first job's, for every method; a
    # method's step size is its own recipe's (the CPU profile's tuned recipes differ by method).
    with sweeps._composer() as compose:
        own = compose([*base, *jobs[0]])
        configs, recipes = [], []
        for job in jobs:
            tiny = [*base, *job, *synthetic_like(own)]
            configs.append(compose([*tiny, *_shrunk(compose(tiny), experiment, profile)]))
            recipes.append(compose([*base, *job]))
    for job, cfg, recipe in zip(jobs, configs, recipes, strict=True):
        assert cfg.method.name == job_method(job) or len(jobs) == 1
        assert (cfg.solver.name, cfg.train.name, cfg.model.name, cfg.task.name) == (
            own.solver.name,
            own.train.name,
            own.model.name,
            own.task.name,
        )
        assert cfg["update"].rate == recipe["update"].rate and cfg.task.get("stop_self_acc") == own.task.get(
            "stop_self_acc"
        )
        row = runner.run(cfg)
        assert row["status"] == "ok", (job, row.get("error"))
        assert row["solver"] == own.solver.name and row["method"] == cfg.method.name
        if row.get("hvps"):  # a solve by Hessian products (not K-FAC's factors, not an unlearner)
            if cfg.hessian.product == "reverse":
                assert row["solver_hvp"] == "reverse"
            else:
                assert "linearize" in row["solver_hvp"], row["solver_hvp"]
        if "edit_epochs" in row:  # a fine-tuning unlearner: one step per epoch (a training-free one, SSD: one step)
            assert row["steps"] == max(row["edit_epochs"], 1) == 1 and row["edit_examples"] > 0
            assert (row["edit_epochs"] == 0) == (row["stop_reason"] == "done")
        elif cfg.method.name != "retrain":
            assert 1 <= row["steps"] <= 3 and (row["hvps"] > 0 or row["solved_by"] in ("kfac", "ekfac"))
        if cfg.method.name in ("gif", "freezing", "projecting", "second_order"):
            assert (row["n_selected"] == row["n_params"]) == (not METHODS[cfg.method.name].uses_mask)
            assert row["hessian_u"] == (cfg.method.hessian_u if cfg.method.name == "second_order" else None)
        if cfg.method.name == "koh":  # the paper's IF row: GIF over every Conv/Linear parameter
            assert row["form"] == "squared" and 0 < row["n_selected"] <= row["n_params"]
            assert (row["n_selected"] < row["n_params"]) == (cfg.model.name == "vgg11")  # BatchNorm is not in J
        if cfg.solver.name == "authors":  # the paper's series, at the table's step
            assert cfg.solver.mu == own.paper_series.step and cfg.solver.stop == "difference"
        _check_the_task(cfg, row)
    if len(jobs) > 1:  # a table: every registered method, the oracle included
        assert {job_method(job) for job in jobs} == set(METHODS)


def _check_the_task(cfg, row) -> None:
    """The task's own promises, on every method's row."""
    assert row["task"] == cfg.task.name
    if cfg.task.name == "random_removal":
        assert row["n_removed"] == round(0.1 * row["n_train"]) and row["stop_self_acc"] is None
        if row.get("reached_threshold"):  # the oracle has no update loop
            assert row["self_acc"] <= row["val_acc"]  # the stop rule: U down to unseen data's accuracy
            assert all(s["self_acc"] > s["val_acc"] for s in row["trajectory"][:-1])
    elif cfg.task.name == "label_change":
        for key in ("changed_new_acc", "changed_old_acc", "before_changed_new_acc", "retrain_changed_new_acc"):
            assert 0.0 <= row[key] <= 100.0, key
        assert abs(row["n_removed"] - row["n_train"] / 10) <= 2  # all of one class, one class in ten


def test_the_papers_command_on_digits(tmp_path):
    """``python -m gif_bench task=class_removal method=gif mr=0.05`` with digits for CIFAR-10:
    the paper's solver (the authors' modified LiSSA series), recipe, model and rate; only the width, epochs, LiSSA
    iterations, Hessian sample and steps are small."""
    args = [
        "task=class_removal",
        "method=gif",
        "mr=0.05",
        "dataset=digits",
        "model.width=0.125",
        "train.epochs=2",
        "logger=none",
        "device=cpu",
        "solver.max_iter=10",
        "solver.power_iters=5",
        "hessian.samples=64",
        "update.max_steps=5",
        f"paths.root={tmp_path}",
    ]
    proc = run_cli(*args)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (path,) = (tmp_path / "results" / "default").glob("*.json")
    row = json.loads(path.read_text())
    assert row["status"] == "ok" and row["solver"] == "authors" and row["train_recipe"] == "paper"
    assert row["model"] == "vgg11" and row["update_rate"] == 0.06 and row["solver_iterations"] >= 1
    assert "FutureWarning" not in proc.stderr + proc.stdout
