"""The whole run on tiny synthetic data: rows, skipping, the model cache, W&B offline, Hydra CLI."""

import json
import os
import stat
import subprocess
import sys
import time

import pytest
import torch
from conftest import ROOT, TINY, TINY_VGG, run_cli

from gif_bench import config, runner, tasks, train
from gif_bench import data as datasets
from gif_bench import rows as result_rows
from gif_bench.data import Split


def test_run_writes_a_complete_row_then_skips_then_reuses_the_cache(make_cfg, tmp_path):
    cfg = make_cfg(own_cache=True)
    row = runner.run(cfg)
    path = result_rows.row_path(config.settle(cfg))  # runner.run canonicalised cfg in place
    assert path.exists() and json.loads(path.read_text())["run_id"] == row["run_id"]
    assert row["status"] == "ok" and row["error"] is None
    for key in (
        "test_acc",
        "test_loss",
        "self_acc",
        "self_loss",
        "forget_test_acc",
        "f1",
        "before_test_acc",
        "before_self_acc",
        "best_test_acc",
        "best_step",
        "steps",
        "n_params",
        "n_selected",
        "hvps",
        "solver_iterations",
        "solver_restarts",
        "solver_residual",
        "update_seconds",
        "peak_memory_mb",
        "device",
        "torch_version",
        "git_sha",
        "trajectory",
        "retrain_test_acc",
        "retrain_self_acc",
        "retrain_seconds",
        "gap_to_retrain",
        "best_gap_to_retrain",
    ):
        assert key in row, key
    for key in ("test_acc", "self_acc", "forget_test_acc", "before_test_acc"):
        assert 0.0 <= row[key] <= 100.0
    assert 0 < row["n_selected"] < row["n_params"]
    assert row["model_cached"] is False and 1 <= row["steps"] <= 3 and len(row["trajectory"]) == row["steps"]
    assert list((tmp_path / "cache" / "models").glob("*.pt"))
    assert not list(tmp_path.rglob("*.tmp"))  # atomic writes leave no temp files
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask

    mtime = path.stat().st_mtime_ns
    again = runner.run(cfg)
    assert again == json.loads(path.read_text()) and path.stat().st_mtime_ns == mtime  # skipped

    forced = runner.run(make_cfg("force=true", own_cache=True))
    assert forced["model_cached"] is True and forced["status"] == "ok"
    assert forced["before_test_acc"] == row["before_test_acc"]  # the same trained weights


def test_final_and_best_iterates_can_be_saved(make_cfg, tmp_path):
    row = runner.run(make_cfg(*TINY_VGG, "save_edited=true", "update.max_steps=4", drop=("model",)))
    folder = tmp_path / "edited" / "default" / row["run_id"]
    final = torch.load(folder / "final.pt", weights_only=True)
    best = torch.load(folder / "best.pt", weights_only=True)
    assert set(final) == set(best) and any("running_mean" in k for k in final)  # full state dicts
    changed = [k for k in final if not torch.equal(final[k], best[k])]
    assert (row["best_step"] == row["steps"]) == (not changed)


def test_cache_key_follows_the_training_set(make_run):
    run = make_run()
    x, y = torch.zeros(4, 3, 32, 32), torch.tensor([0, 1, 2, 3])
    key = train.cache_key(run, Split(x, y))
    assert train.cache_key(run, Split(x.clone(), y.clone())) == key
    assert train.cache_key(run, Split(x, torch.tensor([0, 1, 2, 2]))) != key  # relabelled
    assert train.cache_key(run, Split(x[:3], y[:3])) != key  # removed
    assert train.cache_key(make_run("seed=1"), Split(x, y)) != key
    assert train.cache_key(make_run("train.lr=0.01"), Split(x, y)) != key


def _wandb_records(path):
    """Records of a ``.wandb`` file: a 7-byte header, then LevelDB-style chunks in 32 KiB blocks."""
    from wandb.proto import wandb_internal_pb2 as pb

    raw, pos, block, pending, out = path.read_bytes(), 7, 32768, b"", []
    assert raw[:4] == b":W&B"
    while pos + 7 <= len(raw):
        if block - pos % block < 7:  # block trailer too short for a header: padding
            pos += block - pos % block
            continue
        length, kind = int.from_bytes(raw[pos + 4 : pos + 6], "little"), raw[pos + 6]
        chunk, pos = raw[pos + 7 : pos + 7 + length], pos + 7 + length
        if kind == 0 and length == 0:
            break
        pending = chunk if kind in (1, 2) else pending + chunk
        if kind in (1, 4):
            record = pb.Record()
            record.ParseFromString(pending)
            out.append(record)
    return out


def test_wandb_offline_run_holds_config_and_summary(make_cfg, tmp_path):
    cfg = make_cfg("logger=wandb", "logger.mode=offline")
    row = runner.run(cfg)
    import wandb

    wandb.teardown()  # the service process writes the log on its own time; teardown waits for it
    runs = list((tmp_path / "wandb").glob("offline-run-*"))
    assert len(runs) == 1 and row["wandb_run_id"] in runs[0].name
    records = _wandb_records(next(runs[0].glob("*.wandb")))
    config, summary, history = {}, {}, 0
    for r in records:
        kind = r.WhichOneof("record_type")
        if kind == "run":
            config.update({i.key: json.loads(i.value_json) for i in r.run.config.update})
        elif kind == "config":
            config.update({i.key: json.loads(i.value_json) for i in r.config.update})
        elif kind == "summary":
            summary.update({i.key: json.loads(i.value_json) for i in r.summary.update})
        elif kind == "history":
            history += 1
    config = {k: (v["value"] if isinstance(v, dict) and set(v) == {"value"} else v) for k, v in config.items()}
    assert config["task"]["name"] == "class_removal" and config["dataset"]["name"] == "synthetic"
    assert config["mr"] == cfg.mr
    assert summary["run_id"] == row["run_id"] and summary["test_acc"] == row["test_acc"]
    assert history == 1 + row["steps"]  # the original model, then every update step


def test_cli_run_and_multirun(tmp_path):
    proc = run_cli("-m", *TINY, f"paths.root={tmp_path}", "mr=0.05,0.1")
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = [json.loads(p.read_text()) for p in (tmp_path / "results" / "default").glob("*.json")]
    assert sorted(r["mr"] for r in rows) == [0.05, 0.1]
    assert all(r["status"] == "ok" for r in rows)
    df = result_rows.collect(tmp_path)
    assert sorted(df["mr"]) == [0.05, 0.1] and set(df["experiment"]) == {"default"}
    summary = subprocess.run(
        [sys.executable, "-m", "gif_bench.report", "--rows", "--root", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert summary.returncode == 0 and "gif" in summary.stdout and "0.05" in summary.stdout


@pytest.mark.parametrize(
    ("launcher", "says"), [("joblib", "Joblib.Parallel(n_jobs=2"), ("submitit_local", "Submitit 'local'")]
)
def test_a_sweep_runs_through_a_parallel_launcher(tmp_path, launcher, says):
    proc = run_cli("-m", *TINY, f"paths.root={tmp_path}", f"launcher={launcher}", "mr=0.05,0.1")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert says in proc.stdout + proc.stderr
    rows = [json.loads(p.read_text()) for p in (tmp_path / "results" / "default").glob("*.json")]
    assert sorted(r["mr"] for r in rows) == [0.05, 0.1] and all(r["status"] == "ok" for r in rows)


def test_a_parallel_sweep_trains_each_model_once_before_its_jobs(tmp_path):
    cache = tmp_path / "own-cache"
    args = ["-m", *TINY, f"paths.root={tmp_path}", f"paths.cache={cache}", "launcher=joblib", "mr=0.05,0.1", "seed=0,1"]
    proc = run_cli(*args)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "training 4 model(s) the sweep needs, 2 at a time" in proc.stderr  # two seeds: model and oracle
    assert proc.stderr.count("'s model: ") == 2 and proc.stderr.count("'s oracle: ") == 2
    rows = [json.loads(p.read_text()) for p in (tmp_path / "results" / "default").glob("*.json")]
    assert len(rows) == 4 and all(r["status"] == "ok" for r in rows)
    assert all(r["model_cached"] and r["retrain_cached"] for r in rows)  # no job trained: each loaded
    assert len(list((cache / "models").glob("*.pt"))) == 4
    again = run_cli(*args)  # everything cached (and every run done): nothing to train first
    assert again.returncode == 0 and "the sweep needs" not in again.stderr


def test_an_edit_that_diverges_fails_its_run_and_the_sweep_goes_on(tmp_path):
    """Fine-tuning at 10⁹ times the training rate: its loss leaves the floats. That is the
    method's result at that setting, not the user's recipe: a failed row, the next job runs, and
    the sweep exits 1 at its end, naming the failed job (a diverging *training* is refused)."""
    proc = run_cli(
        "-m", *TINY, f"paths.root={tmp_path}", "method=finetune", "method.epochs=1", "method.lr_factor=1e9,0.1"
    )
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert "1 job(s) of the sweep failed" in proc.stderr and "EditDiverged: finetune" in proc.stderr
    rows = {r["lr_factor"]: r for r in (json.loads(p.read_text()) for p in (tmp_path / "results").rglob("*.json"))}
    assert rows[1e9]["status"] == "failed" and rows[1e9]["error"].startswith("EditDiverged: finetune")
    assert rows[0.1]["status"] == "ok"


def test_a_sweep_stopped_midway_then_run_again_runs_only_what_is_missing(tmp_path):
    args = ["-m", *TINY, f"paths.root={tmp_path}", "mr=0.05,0.1,0.2"]
    env = {**os.environ, "TQDM_DISABLE": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "gif_bench", *args], cwd=ROOT, env=env)
    results_dir = tmp_path / "results" / "default"
    deadline = time.monotonic() + 240
    while not list(results_dir.glob("*.json")) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    proc.kill()  # stopped midway: after the first job's row, before the last one's
    proc.wait()
    first = {p.name: p.stat().st_mtime_ns for p in results_dir.glob("*.json")}
    assert 1 <= len(first) < 3
    again = run_cli(*args)
    assert again.returncode == 0, again.stderr[-2000:]
    rows = {p.name: p for p in results_dir.glob("*.json")}
    assert sorted(json.loads(p.read_text())["mr"] for p in rows.values()) == [0.05, 0.1, 0.2]
    assert all(rows[name].stat().st_mtime_ns == mtime for name, mtime in first.items())  # not re-run
    assert again.stdout.count("already done") + again.stderr.count("already done") == len(first)


def test_the_methods_options_reach_the_harness(make_cfg):
    """(Every method of every experiment runs in tests/test_every_experiment_runs.py.)"""
    row = runner.run(make_cfg("method=second_order", "method.hessian_u=exact"))
    assert row["status"] == "ok" and row["hessian_u"] == "exact"
    row = runner.run(make_cfg("method=koh", "method.form=classic", "solver=lissa", drop=("solver",)))
    assert row["status"] == "ok" and row["solver_scale"] == 25.0 and row["solver_restarts"] == 0  # classic LiSSA
    assert row["form"] == "classic" and row["n_selected"] == row["n_params"]
    row = runner.run(make_cfg("method=koh", "solver=lissa", "solver.max_iter=3", drop=("solver",)))
    assert row["status"] == "ok" and row["form"] == "squared" and row["solver_scale"] != 25.0  # the paper's IF row
    assert row["n_selected"] == row["n_params"]  # every Conv/Linear parameter: all of the small CNN's
    # the products' form changes how H v is computed, not what it is
    traced, plain = (runner.run(make_cfg("method=gif", f"hessian.product={m}")) for m in ("linearize", "reverse"))
    assert (traced["solver_hvp"], plain["solver_hvp"]) == ("restricted linearize", "reverse")
    assert traced["run_id"] != plain["run_id"] and traced["hvps"] == plain["hvps"]
    assert [s["self_acc"] for s in plain["trajectory"]] == [s["self_acc"] for s in traced["trajectory"]]
    assert plain["solver_residual"] == pytest.approx(traced["solver_residual"], rel=1e-3)
    assert plain["test_loss"] == pytest.approx(traced["test_loss"], rel=1e-4)


def test_the_retrain_oracle_is_trained_once_per_setting_and_reused(make_cfg, make_run, tmp_path):
    runs = [("method=gif", "mr=0.05"), ("method=gif", "mr=0.1"), ("method=freezing", "mr=0.05"), ("method=retrain",)]
    rows = [runner.run(make_cfg(*overrides, own_cache=True)) for overrides in runs]
    assert [r["retrain_cached"] for r in rows] == [False, True, True, True]
    assert [r["model_cached"] for r in rows] == [False, True, True, True]
    assert len(list((tmp_path / "cache" / "models").glob("*.pt"))) == 2  # the original and the oracle
    for key in ("retrain_test_acc", "retrain_self_acc", "retrain_forget_test_acc", "retrain_seconds"):
        assert len({r[key] for r in rows}) == 1, key
    # a loaded oracle's retrain_seconds is the time stored with the cache entry when it was trained
    stored = {float(torch.load(p, weights_only=True)["seconds"]) for p in (tmp_path / "cache" / "models").glob("*.pt")}
    assert rows[-1]["retrain_cached"] and rows[-1]["retrain_seconds"] in stored
    assert rows[-1]["retrain_seconds"] == rows[0]["retrain_seconds"]  # rows[0] trained it
    for r in rows:
        assert r["speedup_vs_retrain"] == pytest.approx(r["retrain_seconds"] / r["edit_seconds"])
        assert r["retrain_example_grads"] == 2 * (r["n_train"] - r["n_removed"])  # train.epochs=2 × |R|
        ratio = r["retrain_example_grads"] / r["edit_example_grads"]
        assert r["gradient_speedup_vs_retrain"] == pytest.approx(ratio)
    assert rows[-1]["speedup_vs_retrain"] == 1.0  # retraining against itself
    gif = rows[0]
    assert gif["edit_seconds"] >= gif["influence_seconds"] >= gif["solve_seconds"] > 0
    # the edit's evaluation forwards: U and validation at every step (the test splits, every
    # update.eval_every steps and at the reported iterates, are the row's: report_seconds)
    run = make_run("method=gif")
    edit = tasks.build(run.task, datasets.load(run.dataset, run.paths.data))
    decide = sum(len(edit.eval_sets[n]) for n in ("self", "val"))
    assert gif["eval_forwards"] == gif["steps"] * decide
    assert gif["report_seconds"] > 0 and gif["search_seconds"] > 0
    unit = gif["example_gradient_seconds"]
    rho = gif["solve_seconds"] / gif["hvps"] / (gif["hessian_samples"] * unit)
    assert gif["hvp_gradient_ratio"] == pytest.approx(rho)
    by_hand = gif["n_removed"] + gif["hvps"] * gif["hessian_samples"] * rho
    by_hand += gif["eval_forwards"] * gif["forward_gradient_ratio"]
    assert gif["edit_example_grads"] == pytest.approx(by_hand)
    oracle = rows[-1]
    assert oracle["test_acc"] == oracle["retrain_test_acc"] and oracle["gap_to_retrain"] == 0.0
    assert oracle["self_acc"] == oracle["retrain_self_acc"] and oracle["steps"] == 0
    gif = rows[0]
    expected = sum(abs(gif[k] - gif[f"retrain_{k}"]) for k in ("test_acc", "self_acc", "forget_test_acc")) / 3
    assert gif["gap_to_retrain"] == pytest.approx(expected)
    assert (
        runner.run(make_cfg("method=gif", "mr=0.05", "seed=1", own_cache=True))["retrain_cached"] is False
    )  # a new setting


def test_second_order_relabelling_with_gauss_newton_curvature_needs_one_solve(make_cfg):
    # the Gauss–Newton H_U of a relabelling is zero: the second H⁻¹ solve has nothing to do
    overrides = ("task=label_change", "method=second_order")
    rows = {
        form: runner.run(make_cfg(*overrides, f"method.hessian_u={form}", drop=("task",)))
        for form in ("gauss_newton", "exact")
    }
    max_iter = 5  # TINY's solver.max_iter
    assert rows["gauss_newton"]["solver_iterations"] <= max_iter < rows["exact"]["solver_iterations"]


def test_backdoor_rows_carry_the_attack_metrics(make_cfg):
    row = runner.run(make_cfg("task=backdoor", "task.target_class=4"))
    assert row["status"] == "ok" and row["n_removed"] == round(0.1 * row["n_train"])
    for key in ("clean_acc", "attack_success", "relabel_acc", "corrupt_acc"):
        for prefix in ("", "before_", "best_", "retrain_"):
            assert 0.0 <= row[prefix + key] <= 100.0, prefix + key
    assert {"attack_success", "relabel_acc", "self_acc"} <= set(row["trajectory"][0])


def test_toy_regression_figure_and_row(tmp_path):
    from gif_bench import toy

    row = toy.run(toy.Toy(), tmp_path)
    png = tmp_path / "figures" / "toy_regression.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
    # freezing is the exact minimiser over J of a quadratic: it lands on the marked optimum
    assert row["freezing_end"] == pytest.approx(row["optimum_over_j"], abs=1e-12)
    assert row["freezing_retained_loss"] <= min(row["gif_retained_loss"], row["projecting_retained_loss"])
    assert row["retrain_loss"] <= row["freezing_retained_loss"] < row["retained_loss_before"]


def test_rows_carry_the_oracle_relative_metrics(make_cfg):
    from gif_bench.oracle import KEYS

    row = runner.run(make_cfg())
    for key in KEYS:
        for prefix in ("", "best_", "before_"):
            assert isinstance(row[prefix + key], float), prefix + key
    assert 0.0 <= row["mia_efficacy"] <= 100.0 and 0.0 <= row["retrain_mia_efficacy"] <= 100.0
    assert row["kl_retrain_test"] >= 0.0 and 0.0 <= row["agree_retrain_test"] <= 100.0
    assert "retrain_kl_retrain_test" not in row  # trivially 0 for the oracle itself
    oracle_row = runner.run(make_cfg("method=retrain"))
    assert oracle_row["kl_retrain_test"] == 0.0 and oracle_row["agree_retrain_test"] == 100.0
    assert oracle_row["mia_efficacy"] == oracle_row["retrain_mia_efficacy"] == row["retrain_mia_efficacy"]


def test_a_collapsing_edit_is_stopped_and_flagged(make_cfg):
    """An absurd step size destroys the model at once: the loop stops at the first step whose
    validation accuracy is more than update.max_val_drop below the model's before the edit."""
    row = runner.run(make_cfg("update.rate=1000", "update.max_steps=50", "update.max_val_drop=5"))
    assert row["stop_reason"] == "collapse" and row["max_val_drop"] == 5.0
    assert row["val_acc"] < row["before_val_acc"] - 5 and row["steps"] < 50
    assert all(s["val_acc"] >= row["before_val_acc"] - 5 for s in row["trajectory"][:-1])
    normal = runner.run(make_cfg())
    assert normal["stop_reason"] in ("threshold", "max_steps") and normal["max_val_drop"] == 20.0
    assert (normal["stop_reason"] == "threshold") == normal["reached_threshold"]


def test_paths_cache_shares_trained_models_across_roots(make_cfg, tmp_path, monkeypatch):
    monkeypatch.delenv("GIF_BENCH_CACHE")
    assert make_cfg().paths.cache == f"{tmp_path}/cache"  # by default a root shares nothing
    shared = tmp_path / "shared"
    monkeypatch.setenv("GIF_BENCH_CACHE", str(shared))
    first = runner.run(make_cfg("method=retrain", root=tmp_path / "a"))
    second = runner.run(make_cfg("method=retrain", root=tmp_path / "b"))
    assert (first["model_cached"], second["model_cached"]) == (False, True)
    assert len(list((shared / "models").glob("*.pt"))) == 2 and not (tmp_path / "a" / "cache").exists()
    assert make_cfg(f"paths.cache={tmp_path}/mine").paths.cache == f"{tmp_path}/mine"  # the key wins
