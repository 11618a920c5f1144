"""The solver study (experiment=solver_study): its grid in both profiles (tasks, methods, solvers,
damping values, seeds, and table1's and table2's trained models), and shrunk jobs of it end to
end on synthetic data that measure their directions against cached references."""

import math

import pytest
from conftest import synthetic_like

from gif_bench import config, runner, study, study_report, sweeps

PROFILES = ("paper", "cpu")
TABLES = {"class_removal": "table1", "backdoor": "table2"}  # the study's tasks, and whose models they edit
SOLVES = {  # GIF's and freezing's variants: (solver, max_iter, tol); None: the task's own
    "series": ("authors", None, 1e-9),
    "converged": ("cg", 1000, 1e-4),
    "cg5": ("cg", 5, 0.0),
    "cg20": ("cg", 20, 0.0),
    "cg50": ("cg", 50, 0.0),
    **{f"ridge{i}": ("cg", 1000, 1e-4) for i in (1, 2, 3)},
}
DAMPINGS = {"kfac_heuristic", "kfac1", "kfac2", "kfac3"}  # K-FAC's and EK-FAC's
TRAINING = ("dataset", "model", "train", "task", "hessian", "selector", "paper_series")  # what the tables share


def _cells(grid) -> set[tuple]:
    return set(zip(grid["task"], grid["method"], grid["variant"], grid["seed"]))


def _expected(seeds) -> set[tuple]:
    cells = {(t, m, v, s) for t in TABLES for s in seeds for m in ("gif", "freezing") for v in SOLVES}
    return cells | {(t, m, v, s) for t in TABLES for s in seeds for m in ("kfac", "ekfac") for v in DAMPINGS}


def test_the_solver_study_grid_has_every_variant_once():
    """The report's grid of the CPU profile: every (task, method, variant, seed) the study runs,
    each once with its own run id, the pairs a variant does not apply to left out."""
    grid = study_report.study_grid(["experiment=solver_study", "profile=cpu"])
    seeds = set(grid["seed"])
    assert len(seeds) >= 5 and set(grid["experiment"]) == {"solver_study-cpu"}
    assert _cells(grid) == _expected(seeds) and len(grid) == len(_expected(seeds))
    assert grid["run_ids"].map(tuple).is_unique
    for _, cell in grid.iterrows():
        if cell["variant"] in SOLVES:
            solver, max_iter, tol = SOLVES[cell["variant"]]
            n = {"class_removal": 200, "backdoor": 30}[cell["task"]]  # the paper's series per table
            assert (cell["solver"], cell["solver_max_iter"], cell["solver_tol"]) == (solver, max_iter or n, tol)
            assert (cell["mr"], cell["selector"]) == (0.05, "highest_k_outputs")
        else:
            assert (cell["mr"], cell["selector"]) == (1.0, "all")
    damped = grid[grid["variant"].str.startswith("ridge")].groupby(["task", "variant"])["solver_damping"].first()
    kfac = grid[grid["variant"].str.startswith("kfac")].groupby(["task", "variant"])["method_damping"].first()
    for task in TABLES:  # log grids, the strongest first, two decades apart; the heuristic is null
        ridge = [damped[(task, f"ridge{i}")] for i in (1, 2, 3)]
        lams = [kfac[(task, f"kfac{i}")] for i in (1, 2, 3)]
        for values in (ridge, lams):
            assert all(a == pytest.approx(100 * b) and b > 0 for a, b in zip(values, values[1:])), values
        assert math.isnan(kfac[(task, "kfac_heuristic")])
        undamped = grid[(grid["task"] == task) & ~grid["variant"].str.startswith("ridge")]
        assert undamped["solver_damping"].fillna(0).eq(0).all()


@pytest.mark.parametrize("profile", PROFILES)
def test_the_solver_study_composes_in_both_profiles_on_the_tables_models(profile):
    """Its jobs cover every task, method, variant and at least five seeds; each task trains and
    evaluates what its table does (same model-cache key, oracle, rate, stop rule, Hessian
    sample, MR and selector), its series is the table's own solver, and the variants solve as
    they say."""
    base = ["experiment=solver_study", f"profile={profile}"]
    jobs = [dict(o.split("=", 1) for o in job) for job in sweeps.sweep_jobs(base)]
    seeds = {int(j["seed"]) for j in jobs}
    assert len(seeds) >= 5 and {j["study_task"] for j in jobs} == set(TABLES)
    assert {j["method"] for j in jobs} == {"gif", "freezing", "kfac", "ekfac"}
    assert {j["study_variant"] for j in jobs} == set(SOLVES) | DAMPINGS and len(jobs) == 2 * 4 * 12 * len(seeds)
    with sweeps._composer() as compose:
        for task, table in TABLES.items():
            table_job = [f"experiment={table}", f"profile={profile}", "method=gif", "mr=0.05", "seed=3"]
            own = compose([*table_job, "recipe=published"])  # the study runs the published recipes
            ours = compose([*base, f"study_task={task}", "method=gif", "study_variant=series", "seed=3"])
            for key in TRAINING:
                assert ours[key] == own[key], (task, key)
            assert ours["update"] == own["update"] and ours.mr == own.mr and ours.study.references
            assert ours.solver == own.solver  # the series is the table's own solver (its step and N)
            assert ours.study.series == own.solver  # and the reference every row is compared with
            ridge = compose([*base, f"study_task={task}", "method=freezing", "study_variant=ridge2", "seed=3"])
            lam = ridge.study_grid.ridge.r2
            assert (ridge.solver.name, ridge.solver.tol, ridge.solver.damping) == ("cg", 1e-4, lam)
            assert ridge.study.converged.tol == 1e-4 and ridge.study.converged.name == "cg"
            kfac = compose([*base, f"study_task={task}", "method=ekfac", "study_variant=kfac3", "seed=3"])
            assert kfac.method.damping == kfac.study_grid.kfac_damping.k3 and config.not_a_run(kfac) is None
            assert config.not_a_run(compose([*base, f"study_task={task}", "method=kfac", "study_variant=cg20"]))
    # A new grid value reruns its own variant only: the grid reaches a run through its solver's damping.
    with sweeps._composer() as compose:
        job = [*base, "study_task=backdoor", "method=gif", "seed=0"]
        ids = {
            (variant, r2): config.run_id(compose([*job, f"study_variant={variant}", f"study_grid.ridge.r2={r2}"]))
            for variant in ("series", "ridge2")
            for r2 in (1e-4, 3e-4)
        }
    assert ids[("series", 1e-4)] == ids[("series", 3e-4)] and ids[("ridge2", 1e-4)] != ids[("ridge2", 3e-4)]


def _tiny(cfg) -> list[str]:
    """Synthetic data of the task's own shape, a 1/16-width network, one epoch, five-term series
    and CG references, three power iterations, three steps, reverse-mode products."""
    return [
        *synthetic_like(cfg),
        "model.width=0.0625",
        "train.epochs=1",
        "hessian.samples=32",
        "selector.samples=32",
        "update.max_steps=3",
        "hessian.product=reverse",
        "paper_series.max_iter=5",
        "study.converged.max_iter=5",
        "study.power_iters=3",
    ]


def _run(tmp_path, *job: str) -> dict:
    base = ["experiment=solver_study", "profile=cpu", f"paths.root={tmp_path}", "study_task=backdoor", "seed=0", *job]
    cfg = sweeps.compose(base)
    return runner.run(sweeps.compose([*base, *_tiny(cfg)]))


def test_shrunk_study_jobs_measure_their_directions_against_cached_references(tmp_path):
    series = _run(tmp_path, "method=gif", "study_variant=series")
    assert series["status"] == "ok" and series["study_variant"] == "series" and series["solver"] == "authors"
    assert abs(series["cos_series"] - 1.0) < 1e-6 and series["direction_norm"] > 0  # the series is its own reference
    assert series["regularisation"] > 0 and series["spectrum_max"] > 0 and series["reference_method"] == "gif"
    assert series["references_cached"] is False and series["direction_stored"] is False  # it solved and stored them
    early = _run(tmp_path, "method=gif", "study_variant=cg5")
    assert early["solver"] == "cg" and early["solver_iterations"] == 5 and early["references_cached"] is True
    assert math.isclose(early["regularisation"], 1 / 5, rel_tol=1e-9)  # CG stopped after k: ρ = 1/k
    converged = _run(tmp_path, "method=gif", "study_variant=converged")  # its own solve: the stored reference
    assert converged["references_cached"] is True and converged["direction_stored"] is True
    assert abs(converged["cos_converged"] - 1.0) < 1e-6 and converged["solver"] == "cg"
    assert converged["cos_series"] == pytest.approx(series["cos_converged"], abs=1e-6)  # the same two directions
    for row in (series, early, converged):
        assert all(abs(row[k]) <= 1.0 + 1e-9 for k in ("cos_series", "cos_converged")), row
        assert row["spectrum_max"] == series["spectrum_max"] and row["n_selected"] == series["n_selected"]
    kfac = _run(tmp_path, "method=kfac", "study_variant=kfac2")  # against GIF's references, on GIF's J
    assert kfac["status"] == "ok" and kfac["reference_method"] == "gif" and kfac["mr"] == 1.0
    assert kfac["reference_selected"] == series["n_selected"] and kfac["damping"] == kfac["effective_damping"]
    assert kfac["converged_iterations"] == series["converged_iterations"]  # GIF's stored references, reused
    assert 0 < kfac["share_in_reference_j"] < 1 and series["share_in_reference_j"] == pytest.approx(1.0)
    assert all(abs(kfac[k]) <= kfac["share_in_reference_j"] + 1e-9 for k in ("cos_series", "cos_converged"))
    assert kfac["spectrum_max"] > 0 and kfac["regularisation"] > 0  # μ against H's top over every Conv/Linear layer
    assert _run(tmp_path, "method=kfac", "study_variant=cg5")["status"] == "skipped"  # not a pair of the study


def test_a_corrupt_reference_is_moved_aside_and_rebuilt(tmp_path):
    import torch

    params = {"w": torch.zeros(3)}
    path = tmp_path / "directions" / "abc.pt"
    path.parent.mkdir()
    path.write_bytes(b"not a torch file")
    assert study._load(path, params) is None and not path.exists() and path.with_name("abc.pt.corrupt").exists()
    study._store(path, {"w": torch.ones(2)}, study.influence.SolveInfo(solver="cg"))  # another model's tensors
    assert study._load(path, params) is None and not path.exists()
    study._store(path, {"w": torch.ones(3)}, study.influence.SolveInfo(solver="cg", iterations=4))
    entry = study._load(path, params)
    assert torch.equal(entry["direction"]["w"], torch.ones(3)) and study._info(entry["info"]).iterations == 4
    assert study.cosine({"w": torch.ones(3)}, {"w": -2 * torch.ones(3)}) == pytest.approx(-1.0)
