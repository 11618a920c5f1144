"""Tuning on validation (gif_bench.tuning, gif_bench.tune): each method's search space, a trial
that can read neither the test splits nor the oracle, the settings a tuning run is refused, and a
study end to end through Hydra's Optuna sweeper, whose tuned recipe the runs then use."""

import dataclasses
import json
import math
import subprocess
import sys

import pandas as pd
import pytest
from conftest import CONF, ROOT, TINY, run_cli
from hydra import compose, initialize_config_module
from omegaconf import OmegaConf

from gif_bench import CONFIG_MODULE, pipeline, record, report_header, rows, space, tasks, tune, tuning, updates
from gif_bench.config import run_settings, validate
from gif_bench.data import Withheld
from gif_bench.errors import ConfigError, WithheldData
from gif_bench.methods import METHODS
from gif_bench.tasks import TASKS

TUNABLE = [m.name for m in METHODS.values() if not m.oracle]
TRIAL = ("tune=test", f"seed={tuning.FIRST_SEED}")


def test_every_method_searches_keys_its_config_has_with_the_sweepers_distributions(make_cfg):
    from hydra_plugins.hydra_optuna_sweeper._impl import create_params_from_overrides

    def kind(dim) -> str:  # the optuna distribution each dimension should become
        if isinstance(dim, space.IntRange):
            return "IntUniformDistribution"
        return "LogUniformDistribution" if dim.log else "UniformDistribution"

    for name in TUNABLE:
        spec, full = METHODS[name], METHODS[name].space()
        assert space.searched(full), f"{name} searches nothing"
        if spec.direction is not None:  # γ for every influence method, MR where it has a mask
            assert "update.rate" in full and ("mr" in full) == spec.uses_mask, name
        cfg = make_cfg(f"method={name}")
        for key in full:  # a misspelt key would add a setting nothing reads
            assert OmegaConf.select(cfg, key, default="absent") != "absent", f"{name}: {key} is not in its config"
        distributions, fixed = create_params_from_overrides([space.override(k, v) for k, v in full.items()])
        for key, dim in space.searched(full).items():
            assert type(distributions[key]).__name__ == kind(dim), (name, key)
            assert (distributions[key].low, distributions[key].high) == (dim.lo, dim.hi), (name, key)
        assert set(fixed) == set(space.fixed(full)), name
    assert METHODS["retrain"].space() == {}


def test_a_trial_withholds_every_split_its_task_does_not_decide_on_and_the_test_data(make_run):
    for task in TASKS:
        prepared = tuning.withhold(pipeline.prepare(make_run(f"task={task}", *TRIAL, drop=("task",))))
        for name, split in prepared.edit.eval_sets.items():
            assert isinstance(split, Withheld) == (name not in TASKS[task].decides_on), (task, name)
        assert isinstance(prepared.dataset.test, Withheld)
        with pytest.raises(WithheldData, match="'test' is withheld"):
            len(prepared.dataset.test)
        with pytest.raises(WithheldData, match="the oracle"):
            pipeline.retrained(prepared)


@pytest.mark.parametrize("method", ["gif", "koh", "finetune", "scrub", "ssd"])
def test_a_trial_reads_validation_and_U_alone_and_returns_their_score(make_run, method):
    run = make_run(f"method={method}", "method.epochs=1", *TRIAL) if "epochs" in METHODS[method].space() else None
    run = run or make_run(f"method={method}", *TRIAL)
    row = record.record(run)  # any read of a test split or of the oracle raises WithheldData
    assert row["status"] == "ok" and rows.row_path(run).parent.parent.name == "tuning"
    assert not any(k.startswith(("retrain_", "test_", "forget_test", "mia", "tow", "gap_")) for k in row), sorted(row)
    assert math.isfinite(row["objective"]) and 0.0 <= row["objective"] <= 1.0
    assert row["objective"] == pytest.approx(
        tuning.objective({"val_f1": row["val_f1"], "val_acc": row["val_acc"]}, "class_removal")
    )


def test_a_trial_that_changes_only_the_step_size_steps_along_the_direction_its_study_solved(make_run):
    """Trials of one study run in one process: one that differs from the last only in γ takes
    that trial's direction (it would solve the same system) and counts no solve of its own."""
    updates._STUDY_SOLVES.clear()
    first = record.record(make_run("method=koh", "update.rate=0.05", *TRIAL))
    again = record.record(make_run("method=koh", "update.rate=0.2", *TRIAL))
    assert not first["solve_reused"] and again["solve_reused"] and again["influence_seconds"] == 0.0
    assert first["hvps"] > 0 and again["hvps"] == 0
    updates._STUDY_SOLVES.clear()
    fresh = record.record(make_run("method=koh", "update.rate=0.2", "force=true", *TRIAL))
    assert not fresh["solve_reused"] and fresh["influence_seconds"] > 0.0
    assert (fresh["objective"], fresh["steps"], fresh["val_acc"]) == (
        again["objective"],
        again["steps"],
        again["val_acc"],
    )
    other = record.record(make_run("method=koh", "update.rate=0.2", "hessian.samples=16", *TRIAL))
    assert not other["solve_reused"]  # another problem: solved anew


def test_a_metric_or_a_method_that_reads_the_test_data_fails_the_trial_loudly(make_run, monkeypatch):
    def every_split(model, edit, only=None):  # a metric that ignores which sets it may read
        return tasks.class_removal.evaluate(model, edit)

    leaky = dataclasses.replace(TASKS["class_removal"], metrics=every_split)
    monkeypatch.setitem(TASKS._entries, "class_removal", leaky)
    with pytest.raises(WithheldData, match="withheld while tuning"):  # raised, not a failed row Optuna would rank
        record.record(make_run(*TRIAL))
    monkeypatch.undo()

    def peeking(run, model, edit, data):  # a method that looks at the test split
        return len(data.test)

    monkeypatch.setitem(METHODS._entries, "ssd", dataclasses.replace(METHODS["ssd"], unlearn=peeking))
    with pytest.raises(WithheldData):
        record.record(make_run("method=ssd", *TRIAL))


def test_tuning_runs_on_tuning_seeds_a_method_with_something_to_tune(make_cfg):
    for overrides, key in (
        (("tune=t", "seed=0"), "seed=0"),
        (("tune=t", f"seed={tuning.FIRST_SEED}", "method=retrain"), "method=retrain"),
        (("tune=3", f"seed={tuning.FIRST_SEED}"), "tune=3"),
    ):
        with pytest.raises(ConfigError) as err:
            validate(make_cfg(*overrides))
        assert str(err.value).startswith(key) and "\n" not in str(err.value)
    assert run_settings(make_cfg()).tune is None and run_settings(make_cfg(*TRIAL)).tune == "test"


def test_a_study_through_optunas_sweeper_writes_the_recipe_the_runs_then_use(tmp_path):
    """``gif_bench.tune`` on the quickstart's class removal, GIF only, two trials; the tuned
    recipe it writes is what ``recipe=tuned`` composes, and a run at it carries its cost."""
    out, root = tmp_path / "conf", tmp_path / "outputs"
    sets = [f"--set={o}" for o in TINY]
    done = subprocess.run(
        [sys.executable, "-m", "gif_bench.tune", "quickstart", "--profile=paper", "--trials=2", "--methods=gif"]
        + [f"--root={root}", f"--out={out}", *sets],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    tuned = out / "recipes" / "tuned" / "paper" / "class_removal" / "gif.yaml"
    recipe = OmegaConf.load(tuned)
    trials = sorted((root / "tuning" / "studies" / "paper" / "class_removal" / "gif").glob("*/trial.json"))
    assert len(trials) == 2 and recipe.tuning.trials == 2
    results = [json.loads(p.read_text()) for p in trials]
    assert recipe.tuning.objective == max(t["objective"] for t in results)
    assert recipe.tuning.seconds == pytest.approx(sum(t["edit_seconds"] for t in results), abs=1e-2)
    assert 0.01 <= recipe["update"].rate <= 1.0 and 0.01 <= recipe.mr <= 0.5
    assert not (root / "results").exists()  # trials write to tuning/, which no table reads
    (line,) = [x for x in tune.summary("paper", out).splitlines() if x.startswith("| class_removal | GIF |")]
    assert f"update.rate={recipe['update'].rate:.3g}" in line and line.endswith(f"| 2 | {recipe.tuning.seconds:.1f} |")

    search = [f"hydra.searchpath=[file://{out}]", "experiment=quickstart", "profile=paper"]  # no tuned recipe of ours
    with initialize_config_module(config_module=CONFIG_MODULE, version_base="1.3"):
        tuned_cfg = compose("config", overrides=[*search, "recipe=tuned"])
        published = compose("config", overrides=[*search, "recipe=published"])
    assert tuned_cfg["update"].rate == recipe["update"].rate and tuned_cfg.mr == recipe.mr
    assert published["update"].rate != recipe["update"].rate and "tuning" not in published

    ran = run_cli(*search, *TINY, f"paths.root={root}", "recipe=tuned")
    assert ran.returncode == 0, ran.stderr[-2000:]
    (row,) = [json.loads(p.read_text()) for p in (root / "results").glob("*/*.json")]
    assert row["recipe"] == "tuned" and row["tuning_seconds"] == recipe.tuning.seconds
    assert row["update_rate"] == recipe["update"].rate and row["mr"] == recipe.mr
    said = report_header.recipes(tuned_cfg, pd.DataFrame([row]))  # the report says which recipes ran
    assert "tuned on validation" in said and "for gif:" in said and "recipes/tuned/paper/class_removal/" in said
    assert report_header.recipes(tuned_cfg, pd.DataFrame([{**row, "recipe": "published"}])) == ""


@pytest.mark.parametrize(
    "argv, says",
    [
        (["--profile=nope", "table1"], "Could not find 'profile/nope'; one of cpu, fmnist, paper"),
        (["nope"], "Could not find 'experiment/nope'"),
        (["--methods=gif,nope", "table1"], "--methods: nope is not one of gif,"),
        (["--trials=0", "table1"], "--trials: must be at least 1"),
        (["--seed=3", "table1"], f"--seed: a tuning seed is {tuning.FIRST_SEED} or more"),
    ],
)
def test_a_bad_tuning_command_is_refused_in_one_line_before_any_trial(argv, says, capsys, tmp_path):
    with pytest.raises(SystemExit) as done:
        tune.main([*argv, f"--root={tmp_path}"])
    err = capsys.readouterr().err.strip().splitlines()
    assert done.value.code == 2 and says in err[-1] and not (tmp_path / "tuning").exists()


def test_a_report_of_tuned_runs_lists_the_verdicts_against_gif_the_tuning_changed(tmp_path):
    """Rows of one sweep at both recipes (written here, on the sweep's own run ids): fine-tuning
    is worse than GIF on test accuracy at its published recipe and ties at its tuned one; the
    report of the tuned runs lists that change and no other."""
    from gif_bench import report, storage, sweeps

    conf = tmp_path / "conf"
    for method, rate in (("gif", "update:\n  rate: 0.1"), ("finetune", "method:\n  lr_factor: 0.5")):
        storage.write_text(
            conf / "recipes" / "tuned" / "paper" / "class_removal" / f"{method}.yaml",
            f"# @package _global_\n{rate}\ntuning:\n  trials: 2\n  seconds: 1.5\n",
        )
    sweep = ["experiment=quickstart", "profile=paper", f"paths.root={tmp_path}", f"hydra.searchpath=[file://{conf}]"]
    sweep += ["method=gif,finetune,retrain", "seed=0,1,2,3,4,5"]
    noise = [0.3, -0.2, 0.1, -0.4, 0.2, 0.0]
    for recipe in ("published", "tuned"):
        for _, cell in sweeps.expected_grid([*sweep, f"recipe={recipe}"]).iterrows():
            method, seed = cell["method"], int(cell["seed"])
            acc = 95.0 + noise[seed] - (5.0 if (method, recipe) == ("finetune", "published") else 0.0)
            metrics = {"test_acc": acc, "self_acc": 0.0, "val_acc": acc, "f1": 0.9, "forget_test_acc": 0.0}
            row = {
                **{k: cell[k] for k in ("method", "selector", "mr", "experiment")},
                **{f"{p}{k}": v for p in ("", "best_", "before_", "retrain_") for k, v in metrics.items()},
                "seed": seed, "run_id": cell["run_ids"][0], "status": "ok", "recipe": recipe, "task": "class_removal",
                "stop_reason": "threshold", "edit_seconds": 1.0, "retrain_seconds": 10.0, "gap_to_retrain": 0.0,
                "best_gap_to_retrain": 0.0, "device": "cpu", "total_seconds": 1.0, "tuning_seconds": None,
                "trajectory": [{"step": 0, "self_acc": 100.0, "test_acc": acc}],
            }  # fmt: skip
            storage.write_json(tmp_path / "results" / cell["experiment"] / f"{cell['run_ids'][0]}.json", row)

    built = report.build([*sweep, "recipe=tuned"], tmp_path / "report")
    changed = pd.read_csv(built["written"]["changed"])
    assert changed[["method", "metric", "verdict_published", "verdict_tuned"]].values.tolist() == [
        ["finetune", "test_acc", "worse", "tie"]
    ]
    text = built["written"]["markdown"].read_text()
    assert report.CHANGED_HEADER in text and "recipes: tuned on validation" in text


@pytest.mark.parametrize(
    "settings, error",
    [
        (("method=finetune", "method.epochs=1", "method.lr_factor=1e9"), "EditDiverged: finetune"),  # 10⁹ × the rate
        (("method=gif", "mr=1e-6"), "ConfigError: mr=1e-06: selects no parameter"),
    ],
)
def test_a_trial_whose_settings_fail_is_scored_below_every_other_and_its_study_goes_on(settings, error, tmp_path):
    """Fine-tuning at 10⁹ times the training rate (its loss leaves the floats), or an MR that
    selects nothing: a run would stop, the user's to fix; a trial fails, scored
    :data:`tuning.FAILED_OBJECTIVE`, and its study ends normally."""
    folder = tmp_path / "study"
    ran = run_cli(
        "--multirun", *TINY, f"paths.root={tmp_path}", *settings, *TRIAL, "hydra/sweeper=optuna",
        "hydra.sweeper.n_trials=1", "hydra.sweeper.direction=maximize", "update.rate=interval(0.01, 0.02)",
        f"hydra.sweep.dir={folder}",
    )  # fmt: skip
    assert ran.returncode == 0, ran.stderr[-2000:]
    (trial,) = [json.loads(p.read_text()) for p in folder.glob(f"*/{tuning.TRIAL_FILE}")]
    assert trial["status"] == "failed" and trial["objective"] == tuning.FAILED_OBJECTIVE
    assert error in trial["error"], trial["error"]


def test_a_study_whose_every_trial_fails_stops_the_tuning_naming_the_error(tmp_path, capsys):
    sets = [f"--set={o}" for o in (*TINY, "hessian.samples=0")]  # a value every run refuses
    with pytest.raises(SystemExit) as done:
        tune.main(["quickstart", "--methods=ssd", "--trials=2", f"--root={tmp_path}", f"--out={tmp_path}", *sets])
    said = capsys.readouterr().err.strip().splitlines()[-1]
    assert done.value.code == 1 and "every trial failed" in said and "hessian.samples=0" in said
    assert not (tmp_path / "recipes").exists()


def test_the_cpu_profile_runs_every_committed_tuned_recipe_and_published_ones_on_request():
    """What ``make tune PROFILE=cpu`` chose (conf/recipes/tuned/cpu/) is what the CPU profile's
    experiments run, value for value; ``recipe=published`` runs the method's own config."""
    from gif_bench import sweeps
    from gif_bench.tune import _flat, studies

    tuned = sorted((CONF / "recipes" / "tuned" / "cpu").glob("*/*.yaml"))
    assert tuned, "no tuned recipe is committed for the CPU profile"
    experiment = {s.task: s.experiment for s in studies("cpu", ["table1", "table2", "label_change", "random_removal"])}
    for path in tuned:
        task, method = path.parent.name, path.stem
        chosen = OmegaConf.to_container(OmegaConf.load(path))
        record = chosen.pop("tuning")
        run = sweeps.compose([f"experiment={experiment[task]}", "profile=cpu", f"method={method}", "seed=0"])
        published = sweeps.compose(
            [f"experiment={experiment[task]}", "profile=cpu", f"method={method}", "seed=0", "recipe=published"]
        )
        for key, value in _flat(chosen).items():
            assert OmegaConf.select(run, key) == value, (path, key)
        assert OmegaConf.to_container(run.tuning) == record and "tuning" not in published, path
