"""The paper's experiments: their sweeps compose in both profiles, and a sweep's rows become tables,
figures and a W&B table, with missing runs listed."""

import json
import math
import subprocess
import sys

import pandas as pd
import pytest
from conftest import ROOT, TINY, run_cli

from gif_bench import sweeps, tables
from gif_bench.methods import METHODS

PARTIAL = ("gif", "freezing", "projecting")
# every parameter: one run per seed, whatever the MR (koh, second_order, K-FAC, EK-FAC, Arnoldi,
# the unlearners and retraining)
WHOLE = tuple(name for name in METHODS if not METHODS[name].uses_mask)


def _cells(grid: pd.DataFrame) -> set[tuple]:
    return set(zip(grid["method"], grid["mr"], grid["selector"], grid["seed"]))


@pytest.mark.parametrize(
    "profile, seeds, mrs, dataset, width",
    [("paper", (0, 1, 2), (0.05, 0.15, 0.3), "cifar10", 1.0), ("cpu", (0, 1, 2, 3, 4), (0.05,), "digits", 0.125)],
)
def test_table1_sweeps_every_method_mr_and_seed(profile, seeds, mrs, dataset, width):
    grid = sweeps.expected_grid(["experiment=table1", f"profile={profile}"])
    expected = {(m, mr, "highest_k_outputs", s) for m in PARTIAL for mr in mrs for s in seeds}
    expected |= {(m, 1.0, "all", s) for m in WHOLE for s in seeds}
    assert _cells(grid) == expected and len(grid) == (3 * len(mrs) + len(WHOLE)) * len(seeds)
    assert set(grid["experiment"]) == {f"table1-{profile}"}
    published = "recipe=published"  # the published recipe's settings (profile=cpu defaults to its tuned ones)
    cfg = sweeps.compose(["experiment=table1", f"profile={profile}", "mr=0.05", "method=gif", "seed=0", published])
    assert (cfg.dataset.name, cfg.model.name, cfg.model.width, cfg.task.name) == (
        dataset,
        "vgg11",
        width,
        "class_removal",
    )
    assert cfg["update"].rate == 0.06 and cfg.task.stop_self_acc == 0.1


@pytest.mark.parametrize("profile, seeds", [("paper", (0, 1, 2)), ("cpu", (0, 1))])
def test_random_removal_runs_every_method_on_its_own_oracle(profile, seeds):
    grid = sweeps.expected_grid(["experiment=random_removal", f"profile={profile}"])
    # MR 5 %, the config's, or a method's tuned one (profile=cpu runs its tuned recipes)
    job = ["experiment=random_removal", f"profile={profile}"]
    mr = {m: float(sweeps.compose([*job, f"method={m}"]).mr) for m in PARTIAL}
    assert profile == "cpu" or set(mr.values()) == {0.05}
    expected = {(m, mr[m], "highest_k_outputs", s) for m in PARTIAL for s in seeds}
    expected |= {(m, 1.0, "all", s) for m in WHOLE for s in seeds}
    assert _cells(grid) == expected and set(grid["experiment"]) == {f"random_removal-{profile}"}
    cfg = sweeps.compose(["experiment=random_removal", f"profile={profile}", "method=gif", "mr=0.05", "seed=3"])
    assert (cfg.task.name, cfg.task.fraction, cfg.task.within_class, cfg.task.seed) == ("random_removal", 0.1, None, 3)


def test_the_paper_profile_composes_every_experiment_with_its_grid():
    sizes = {}
    for experiment in ("table1", "fig3", "table2", "label_change", "random_removal"):
        sizes[experiment] = len(sweeps.expected_grid([f"experiment={experiment}", "profile=paper"]))
    # fig3: 6 selectors x 5 MRs below 100 % + the one MR-100 % run, per seed; the tables: every
    # partial method per MR (table1: 3 MRs) + the 14 maskless methods (retraining included) once,
    # per seed; 3 seeds
    assert len(PARTIAL) == 3 and len(WHOLE) == 14
    assert sizes == {"table1": 69, "fig3": 93, "table2": 51, "label_change": 51, "random_removal": 51}
    cfg = sweeps.compose(["experiment=table2", "method=gif", "mr=0.05", "seed=0"])
    assert (cfg.dataset.name, cfg.model.name, cfg.train.name, cfg.train.epochs) == ("mnist", "small_cnn", "mnist", 25)
    assert list(cfg.train.milestones) == [12, 18] and cfg.train.lr == 0.1 and cfg["update"].rate == 0.3
    assert cfg.hessian.samples == 2048 and cfg.task.name == "backdoor" and cfg.selector.name == "highest_k_outputs"
    cfg = sweeps.compose(["experiment=fig3", "selector=random", "mr=0.02", "seed=0"])
    assert (cfg.dataset.name, cfg.model.width, cfg.method.name, cfg.task.stop_self_acc) == ("cifar10", 1.0, "gif", 0.4)


def test_the_cpu_profile_runs_the_backdoor_table_on_real_mnist_with_the_papers_recipe():
    grid = sweeps.expected_grid(["experiment=table2", "profile=cpu"])
    assert set(grid["seed"]) == {0, 1, 2} and len(grid) == 3 * len(METHODS)  # one MR: every method once per seed
    cpu = sweeps.compose(["experiment=table2", "profile=cpu", "method=gif", "mr=0.05", "seed=0", "recipe=published"])
    assert (cpu.dataset.name, cpu.dataset.image_size, cpu.model.name, cpu.model.width) == (
        "mnist5k",
        28,
        "small_cnn",
        1.0,
    )
    assert (cpu.train.name, cpu.train.epochs, list(cpu.train.milestones), cpu.train.lr) == ("mnist", 25, [12, 18], 0.1)
    assert (cpu.device, cpu.solver.name, cpu.hessian.samples, cpu["update"].rate) == ("cpu", "authors", 128, 0.3)
    other = sweeps.compose(["experiment=table1", "profile=cpu", "method=gif", "mr=0.05", "seed=0"])
    assert (other.dataset.name, other.train.name) == ("digits", "fast")  # only table2 moves
    mine = sweeps.compose(["experiment=table2", "profile=cpu", "dataset=digits", "train=fast", "mr=0.05", "seed=0"])
    assert (mine.dataset.name, mine.train.name) == ("digits", "fast")  # the command line still wins


# The authors' series per table (reference-notes: Table 1 and the selector study step 7, N = 200;
# Table 2 step 3, N = 30; Table 3, label change, step 5, N = 1000); random removal, not in the
# paper, takes Table 1's.
AUTHORS_SETTINGS = {"table1": (7, 200), "fig3": (7, 200), "table2": (3, 30), "label_change": (5, 1000)}


@pytest.mark.parametrize("profile", ["paper", "cpu", "fmnist"])
@pytest.mark.parametrize("experiment", [*AUTHORS_SETTINGS, "random_removal"])
def test_every_experiment_solves_with_the_authors_series_for_its_table(experiment, profile):
    step, terms = AUTHORS_SETTINGS.get(experiment, AUTHORS_SETTINGS["table1"])
    cfg = sweeps.compose([f"experiment={experiment}", f"profile={profile}", "method=gif", "mr=0.05", "seed=0"])
    solver = cfg.solver
    assert solver.name == "authors" and (solver.mu, solver.max_iter) == (step, terms)
    assert (solver.scale, solver.growth, solver.tol, solver.stop, solver.divergence, solver.damping) == (
        1.0, "add", 1e-9, "difference", "even_step", 0.0,
    )  # fmt: skip
    koh = sweeps.compose([f"experiment={experiment}", f"profile={profile}", "method=koh", "seed=0"])
    assert koh.method.form == "squared" and koh.solver.mu == step  # the paper's IF row, the same series
    converged = sweeps.compose([f"experiment={experiment}", f"profile={profile}", "method=gif", "solver=cg"])
    assert converged.solver.name == "cg" and "mu" not in converged.solver  # CG stays one override away


@pytest.mark.parametrize("experiment", ["table1", "table2", "label_change", "random_removal", "fig3"])
def test_the_fmnist_profile_runs_every_experiment_on_fashion_mnist_with_the_papers_mnist_setting(experiment):
    grid = sweeps.expected_grid([f"experiment={experiment}", "profile=fmnist"])
    assert set(grid["seed"]) == {0, 1, 2} and set(grid["mr"]) <= {0.05, 1.0}  # three seeds, MR 5 % (and 100 %)
    cfg = sweeps.compose([f"experiment={experiment}", "profile=fmnist", "method=gif", "mr=0.05", "seed=0"])
    assert (cfg.dataset.name, cfg.model.name, cfg.model.width) == ("fashion_mnist", "small_cnn", 1.0)
    assert (cfg.train.name, cfg.train.epochs) == ("mnist", 25)
    assert cfg.hessian.samples == (2048 if experiment == "table2" else 512)  # the paper's tables'
    jobs = sweeps.sweep_jobs([f"experiment={experiment}", "profile=fmnist", "method=gif"])
    ran = sweeps.compose(jobs[0])
    # table1 and table2 bracket; table1 solves by CG-20 (the solver study's class-removal choice)
    assert ran["update"].search == ("bracket" if experiment in ("table1", "table2") else "linear")
    cg20 = experiment == "table1"
    assert (ran.solver.name, ran.solver.max_iter, ran.solver.tol) == (
        ("cg", 20, 0.0) if cg20 else ("authors", ran.solver.max_iter, 1e-9)
    )
    # the paper's computation stays one override away: the command line replaces the sweep's solver
    paper = sweeps.compose(
        sweeps.sweep_jobs([f"experiment={experiment}", "profile=fmnist", "solver=authors", "update.search=linear"])[0]
    )
    assert (paper.solver.name, paper.solver.tol, paper["update"].search) == ("authors", 1e-9, "linear")


def test_make_reproduce_tables_runs_table1_and_table2_for_the_fmnist_profile():
    out = subprocess.run(
        ["make", "-n", "reproduce-tables", "PROFILE=fmnist"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout
    assert "for e in table1 table2; do" in out


def test_the_command_line_narrows_an_experiments_sweep():
    grid = sweeps.expected_grid(["experiment=table1", "profile=paper", "seed=1", "method=gif,koh"])
    assert _cells(grid) == {("gif", mr, "highest_k_outputs", 1) for mr in (0.05, 0.15, 0.3)} | {("koh", 1.0, "all", 1)}


def _row(method, mr, seed, **metrics):
    base = {"method": method, "mr": mr, "seed": seed, "selector": "s", "status": "ok", "run_id": f"{method}{mr}{seed}"}
    for prefix in ("before_", "retrain_"):
        base.update({f"{prefix}test_acc": 90.0 + seed, f"{prefix}self_acc": 100.0 if prefix == "before_" else 0.0})
    return {**base, **metrics}


def test_summarize_gives_mean_and_ci_over_seeds_with_reference_lines_and_only_significant_bests():
    rows = pd.DataFrame(
        [
            _row("gif", 0.05, 0, best_test_acc=90.0, best_self_acc=1.0, best_gap_to_retrain=2.0),
            _row("gif", 0.05, 1, best_test_acc=92.0, best_self_acc=3.0, best_gap_to_retrain=4.0),
            _row("koh", 1.0, 0, best_test_acc=95.0, best_self_acc=9.0, best_gap_to_retrain=8.0),
            _row("koh", 1.0, 1, best_test_acc=95.0, best_self_acc=11.0, best_gap_to_retrain=8.0),
            _row("retrain", 1.0, 0),
        ]
    )
    table = tables.summarize(rows, "class_removal", iterate="best")
    assert list(table["method"]) == ["before", "gif", "koh", "retrain"]
    gif = table[table["method"] == "gif"].iloc[0]
    assert gif["test_acc_mean"] == 91.0 and gif["test_acc_std"] == pytest.approx(2**0.5) and gif["seeds"] == 2
    assert gif["test_acc_ci"] == pytest.approx(12.706 * 1.0, abs=1e-3)  # t(0.975, 1) · s/√n
    # self_acc: GIF is lower on both seeds by exactly 8 (paired: significant); test_acc (95 vs
    # 90, 92) and the gap (2, 4 vs 8, 8) differ on both seeds too, but not significantly on two
    # pairs (paired t-test p = 0.16, 0.13): ties, not bests
    assert gif["self_acc_mean"] == 2.0 and gif["best"] == "self_acc" and gif["tied"] == "test_acc,gap_to_retrain"
    koh = table[table["method"] == "koh"].iloc[0]
    assert koh["best"] == "" and koh["tied"] == "test_acc,gap_to_retrain"
    before, retrain = table.iloc[0], table.iloc[-1]
    assert before["test_acc_mean"] == 90.5 and before["self_acc_mean"] == 100.0 and before["best"] == ""
    assert retrain["self_acc_mean"] == 0.0 and retrain["gap_to_retrain_mean"] == 0.0
    markdown = tables.to_markdown(table, "class_removal")
    assert "**2.00 ± 12.71**" in markdown and "95.00 ± 0.00 ≈" in markdown and "91.00 ± 12.71 ≈" in markdown
    assert r"\textbf{2.00 $\pm$ 12.71}" in tables.to_latex(table, "class_removal")


def test_the_selector_table_puts_the_full_run_in_every_line():
    rows = pd.DataFrame(
        [
            {"method": "gif", "selector": "random", "mr": 0.05, "best_test_acc": 80.0},
            {"method": "gif", "selector": "random", "mr": 0.05, "best_test_acc": 82.0},
            {"method": "gif", "selector": "highest_k_outputs", "mr": 0.05, "best_test_acc": 90.0},
            {"method": "gif", "selector": "all", "mr": 1.0, "best_test_acc": 70.0},
        ]
    )
    table = tables.selector_table(rows).set_index("selector")
    assert table.loc["random", "5 %"] == 81.0 and table.loc["highest_k_outputs", "5 %"] == 90.0
    assert list(table["100 %"]) == [70.0, 70.0]
    cells = tables.selector_table(rows, with_ci=True).set_index("selector")
    assert cells.loc["random", "5 %"] == "81.00 ± 12.71 (n=2)"  # t(0.975, 1) · √2/√2
    assert cells.loc["highest_k_outputs", "5 %"] == "90.00 ± nan (n=1)"


def _report(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "gif_bench.report", *args], cwd=ROOT, capture_output=True, text=True, timeout=300
    )


def test_a_sweep_of_an_experiment_becomes_tables_figures_and_a_wandb_table(tmp_path):
    sweep = [
        "experiment=table1",
        "profile=cpu",
        *TINY,
        f"paths.root={tmp_path}",
        "seed=0",
        "mr=0.05",
        "method=gif,koh,retrain",
    ]
    proc = run_cli(*sweep)  # the experiment is a multirun by itself: no -m
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = [json.loads(p.read_text()) for p in (tmp_path / "results" / "table1-cpu").glob("*.json")]
    assert sorted((r["method"], r["mr"]) for r in rows) == [("gif", 0.05), ("koh", 1.0), ("retrain", 1.0)]

    out = tmp_path / "report"
    done = _report(*sweep, "logger=wandb", "logger.mode=offline", "--out", str(out))
    assert done.returncode == 0, done.stderr[-2000:]
    for name in ("table1-cpu.md", "table1-cpu.csv", "table1-cpu.tex", "table1-cpu-trajectories.png"):
        assert (out / name).stat().st_size > 0, name
    table = pd.read_csv(out / "table1-cpu.csv")
    assert list(table["method"]) == ["before", "gif", "koh", "retrain"]
    # the cost column: each edit's speed-up against its retraining, 1 for retraining, none before
    by_method = {r["method"]: r for r in rows}
    speedup = dict(zip(table["method"], table["speedup_vs_retrain_mean"]))
    for method in ("gif", "koh"):
        assert speedup[method] == pytest.approx(by_method[method]["speedup_vs_retrain"])
    assert speedup["retrain"] == 1.0 and math.isnan(speedup["before"])
    markdown = (out / "table1-cpu.md").read_text()
    header = next(line for line in markdown.splitlines() if line.startswith("| method"))
    assert "speedup_vs_retrain ↑" in header
    assert "3 of 3 runs collected" in markdown and "Koh & Liang IF" in markdown and "Incomplete" not in markdown
    tables_logged = list((tmp_path / "wandb").rglob("*.table.json"))
    assert len(tables_logged) == 1 and len(json.loads(tables_logged[0].read_text())["data"]) == 4

    koh = next(
        p for p in (tmp_path / "results" / "table1-cpu").glob("*.json") if json.loads(p.read_text())["method"] == "koh"
    )
    koh.unlink()
    incomplete = _report(*sweep, "--out", str(out))
    assert incomplete.returncode == 1 and "1 run missing" in incomplete.stderr and "koh" in incomplete.stderr
    assert "Incomplete: 1 run missing" in (out / "table1-cpu.md").read_text()


def test_cg_without_a_preconditioner_has_no_probe_options_in_its_run(make_cfg):
    from gif_bench import config
    from gif_bench.config import canonicalize

    plain = canonicalize(make_cfg())
    assert "probes" not in plain.solver and "probe_seed" not in plain.solver
    assert config.run_id(plain) == config.run_id(canonicalize(make_cfg("solver.probes=3")))
    jacobi = canonicalize(make_cfg("solver.preconditioner=jacobi", "solver.probes=3"))
    assert jacobi.solver.probes == 3 and config.run_id(jacobi) != config.run_id(plain)


def test_runs_that_ignore_the_mask_are_recorded_as_what_they_compute(make_cfg):
    from gif_bench.config import canonicalize

    for method in ("koh", "second_order", "retrain"):
        cfg = canonicalize(make_cfg(f"method={method}", "mr=0.05", "selector=random"))
        assert (cfg.mr, cfg.selector.name) == (1.0, "all")
    cfg = canonicalize(make_cfg("method=gif", "mr=1.0", "selector=lowest_k_outputs"))
    assert (cfg.mr, cfg.selector.name) == (1.0, "all")
    cfg = canonicalize(make_cfg("method=gif", "mr=0.05", "selector=random"))
    assert (cfg.mr, cfg.selector.name) == (0.05, "random")
    swept = canonicalize(make_cfg("method=koh", "++method.hessian_u=exact"))  # a sweep over methods
    assert "hessian_u" not in swept.method and canonicalize(make_cfg("method=koh")) == swept
    assert canonicalize(make_cfg("method=second_order", "method.hessian_u=exact")).method.hessian_u == "exact"


def test_a_run_made_on_two_devices_counts_once():
    grid = pd.DataFrame([{"method": "gif", "mr": 0.05, "selector": "s", "seed": 0, "run_ids": ["here", "gpu"]}])
    rows = pd.DataFrame(
        [
            {"run_id": "gpu", "status": "ok", "test_acc": 1.0},
            {"run_id": "here", "status": "ok", "test_acc": 2.0},
            {"run_id": "other", "status": "ok", "test_acc": 3.0},
        ]
    )
    chosen, missing = sweeps.match_grid(rows, grid)
    assert list(chosen["test_acc"]) == [2.0] and missing.empty
    chosen, missing = sweeps.match_grid(rows[rows["run_id"] == "other"], grid)
    assert chosen.empty and list(missing["method"]) == ["gif"] and list(missing["error"]) == ["not run"]
    failed = pd.DataFrame([{"run_id": "here", "status": "failed", "error": "EditDiverged: finetune: nan"}])
    chosen, missing = sweeps.match_grid(pd.concat([rows[rows["run_id"] == "other"], failed]), grid)
    assert chosen.empty and list(missing["error"]) == ["EditDiverged: finetune: nan"]  # why the cell is empty


def test_the_selector_study_becomes_a_figure_and_an_escaped_latex_table(tmp_path):
    sweep = ["experiment=fig3", "profile=cpu", *TINY, f"paths.root={tmp_path}", "seed=0", "mr=0.05,1.0"]
    sweep.append("selector=random,highest_k_outputs")
    proc = run_cli(*sweep)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = tmp_path / "report"
    done = _report(*sweep, "--out", str(out))
    assert done.returncode == 0, done.stderr[-2000:]
    assert (out / "fig3-cpu.png").stat().st_size > 0
    table = pd.read_csv(out / "fig3-cpu.csv").set_index("selector")
    assert list(table.columns) == ["5 %", "100 %"] and table["100 %"].nunique() == 1  # one MR-100 % run
    latex = (out / "fig3-cpu.tex").read_text()
    assert r"5 \%" in latex and "Highest-k outputs" in latex and "_" not in latex
    markdown = (out / "fig3-cpu.md").read_text()
    assert "3 of 3 runs collected" in markdown and "| Random " in markdown


def test_a_bad_report_request_is_one_line():
    for args, says in (
        (["experiment=nope"], "Could not find 'experiment/nope' Available options in 'experiment': fig3"),
        (["experiment=table1", "profile=cpu", "solver=cg,lissa"], "report one setting at a time"),
    ):
        proc = _report(*args)
        assert proc.returncode == 2 and says in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


def test_hydras_sweep_expansion_is_where_gif_bench_reaches_for_it():
    """gif-bench's one use of Hydra's private API; this fails if Hydra moves or changes it."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    from gif_bench.sweeps import _cartesian_product

    parsed = OverridesParser.create().parse_overrides(["mr=0.05,0.1", "seed=0,1", "method=gif"])
    assert _cartesian_product(parsed) == [
        ["mr=0.05", "seed=0", "method=gif"],
        ["mr=0.05", "seed=1", "method=gif"],
        ["mr=0.1", "seed=0", "method=gif"],
        ["mr=0.1", "seed=1", "method=gif"],
    ]


def test_a_grids_configs_are_the_ones_hydra_composes_for_each_job():
    """The grid composer builds each defaults tree once and applies the value overrides itself:
    every job's config, flags included, equals Hydra's own compose of it; other overrides and a
    key that is not there take Hydra's path and its errors."""
    from hydra import compose, initialize_config_module
    from hydra.errors import ConfigCompositionException
    from omegaconf import OmegaConf

    from gif_bench import CONFIG_MODULE

    jobs = sweeps.sweep_jobs(
        ["experiment=label_change", "profile=cpu", "method=gif,second_order", "mr=0.05,0.3", "seed=1"]
    )
    jobs = [[*j, "train.epochs=3", "update.rate=0.2"] for j in jobs] + [
        ["experiment=table1", "method=gif", "mr=0.15", "++method.hessian_u=exact", "~selector.samples"]
    ]
    with sweeps._composer() as composer:
        ours = [composer(job) for job in jobs]
        with pytest.raises(ConfigCompositionException, match="Could not override 'not_a_key'"):
            composer(["experiment=table1", "not_a_key=1"])
    with initialize_config_module(config_module=CONFIG_MODULE, version_base="1.3"):
        hydras = [compose("config", overrides=job) for job in jobs]
    assert len(ours) == 5 and {float(c.mr) for c in ours[:4]} == {0.05, 0.3}
    for mine, theirs in zip(ours, hydras, strict=True):
        assert OmegaConf.to_container(mine) == OmegaConf.to_container(theirs)
        assert OmegaConf.is_struct(mine) and OmegaConf.is_readonly(mine) == OmegaConf.is_readonly(theirs)
    assert ours[1].train.epochs == 3 and ours[1]["update"].rate == 0.2


def test_every_method_is_compared_with_gif_on_the_same_seeds():
    from scipy import stats as sp

    rows = pd.DataFrame(
        [
            _row("gif", 0.05, 0, best_test_acc=90.0, best_self_acc=1.0),
            _row("gif", 0.05, 1, best_test_acc=92.0, best_self_acc=3.0),
            _row("gif", 0.05, 2, best_test_acc=91.0, best_self_acc=2.0),
            _row("koh", 1.0, 0, best_test_acc=95.0, best_self_acc=9.0),
            _row("koh", 1.0, 1, best_test_acc=96.0, best_self_acc=11.0),
            _row("koh", 1.0, 2, best_test_acc=93.0, best_self_acc=10.0),
            _row("retrain", 1.0, 0),
        ]
    )
    pairs = tables.paired_against(rows, "class_removal").set_index("metric")
    assert set(pairs["method"]) == {"koh"} and (pairs["n"] == 3).all()
    test_acc = pairs.loc["test_acc"]
    assert test_acc["mean_diff"] == pytest.approx(11 / 3)  # (5 + 4 + 2) / 3
    assert test_acc["p_t"] == pytest.approx(sp.ttest_rel([95, 96, 93], [90, 92, 91]).pvalue)
    assert math.isnan(test_acc["p_wilcoxon"])  # 3 pairs: Wilcoxon cannot reach 0.05
    assert test_acc["verdict"] == ("better" if test_acc["p_t"] < 0.05 else "tie")
    assert pairs.loc["self_acc", "verdict"] == "worse"  # koh keeps 8 more points of U on each seed


def test_the_papers_order_is_tested_method_by_method_with_reversals_named():
    from scipy import stats as sp

    offsets = {"gif": 0.0, "freezing": -1.0, "projecting": 3.0, "koh": 3.0}  # projecting beats freezing
    rows = pd.DataFrame(
        [
            _row(m, 0.05 if m != "koh" else 1.0, s, best_test_acc=90.0 + off + noise, best_self_acc=0.0)
            for m, off in offsets.items()
            for s, noise in enumerate((0.0, 0.3, -0.2, 0.1))
        ]
        + [_row("gif", 0.15, s, best_test_acc=50.0, best_self_acc=0.0) for s in range(4)]  # not the first line
    )
    pairs = tables.paired_in_order(rows, "class_removal")
    test_acc = pairs[pairs["metric"] == "test_acc"].set_index("method")
    assert list(test_acc.index) == ["gif", "freezing", "projecting"]
    assert list(test_acc["against"]) == ["Freezing 0.05", "Projecting 0.05", "Koh & Liang IF 1"]
    assert test_acc.loc["gif", "mr"] == 0.05 and test_acc.loc["gif", "mean_diff"] == pytest.approx(1.0)
    assert test_acc.loc["gif", "verdict"] == "better"  # the order holds (constant difference: p = 0)
    assert test_acc.loc["freezing", "verdict"] == "worse"  # reversed: projecting is 4 points ahead
    assert test_acc.loc["projecting", "verdict"] == "tie" and test_acc.loc["projecting", "p_t"] == 1.0
    assert (pairs["n"] == 4).all()
    spread = rows.assign(best_test_acc=rows["best_test_acc"] + (rows["method"] == "gif") * rows["seed"] * 0.5)
    row = tables.paired_in_order(spread, "class_removal").iloc[0]
    noise = (0.0, 0.3, -0.2, 0.1)
    gif = [90.0 + n + s * 0.5 for s, n in enumerate(noise)]
    assert (row["method"], row["metric"]) == ("gif", "test_acc")
    assert row["p_t"] == pytest.approx(sp.ttest_rel(gif, [89.0 + n for n in noise]).pvalue)


def test_selectors_are_paired_against_random_at_each_mr():
    from scipy import stats as sp

    acc = {"highest_k_outputs": (95, 96, 94), "random": (90, 93, 88), "lowest_k_outputs": (91, 92, 89)}
    rows = pd.DataFrame(
        [
            {"method": "gif", "selector": sel, "mr": 0.05, "seed": s, "best_test_acc": v}
            for sel, values in acc.items()
            for s, v in enumerate(values)
        ]
        + [{"method": "gif", "selector": "all", "mr": 1.0, "seed": s, "best_test_acc": 70.0} for s in range(3)]
    )
    pairs = tables.selector_pairs(rows).set_index("selector")
    assert set(pairs.index) == {"highest_k_outputs", "lowest_k_outputs"} and set(pairs["mr"]) == {0.05}
    high = pairs.loc["highest_k_outputs"]
    assert high["mean_diff"] == pytest.approx(14 / 3) and high["n"] == 3
    assert high["p_t"] == pytest.approx(sp.ttest_rel([95, 96, 94], [90, 93, 88]).pvalue)
    assert high["verdict"] == ("better" if high["p_t"] < 0.05 else "tie")
    assert pairs.loc["lowest_k_outputs", "verdict"] == "tie"  # +1, +(-1), +1: no consistent sign
