"""Bad input is refused before any work: one line naming the key, non-zero exit, nothing written."""

import json

import pytest
from conftest import TINY, TINY_VGG, run_cli
from omegaconf import OmegaConf

from gif_bench.config import validate
from gif_bench.errors import ConfigError


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("mr=0", "mr=0"),
        ("mr=1.5", "mr=1.5"),
        ("mr=-0.1", "mr=-0.1"),
        ("mr=abc", "mr=abc"),
        ("task.target_class=10", "task.target_class=10"),
        ("task.target_class=-1", "task.target_class=-1"),
        ("update.rate=-0.06", "update.rate=-0.06"),
        ("update.rate=0", "update.rate=0"),
        ("update.max_steps=-3", "update.max_steps=-3"),
        ("update.max_steps=2.5", "update.max_steps=2.5"),
        ("device=tpu", "device=tpu"),
        ("device=cuda:x", "device=cuda:x"),
        ("seed=-1", "seed=-1"),
        ("hessian.samples=0", "hessian.samples=0"),
        ("hessian.product=double_backward", "hessian.product=double_backward"),
        ("solver.max_iter=-5", "solver.max_iter=-5"),
        ("train.epochs=-1", "train.epochs=-1"),
        ("task.stop_self_acc=101", "task.stop_self_acc=101"),
        ("logger=wandb logger.mode=sometimes", "logger.mode=sometimes"),
        ("method=second_order method.hessian_u=fisher", "method.hessian_u=fisher"),
        ("solver.preconditioner=diagonal", "solver.preconditioner=diagonal"),
        ("solver.preconditioner=jacobi solver.probes=0", "solver.probes=0"),
        ("solver.reorthogonalize=sometimes", "solver.reorthogonalize=sometimes"),
        ("solver=lsqr solver.reorthogonalize=1", "solver.reorthogonalize=1"),
        ("solver=minres +solver.damping=0.1", "solver.damping=0.1"),
        ("solver=lissa solver.stop=foo", "solver.stop=foo"),
    ],
)
def test_bad_values_name_the_key(make_cfg, override, key):
    cfg = make_cfg(*override.split())
    with pytest.raises(ConfigError) as err:
        validate(cfg)
    message = str(err.value)
    assert message.startswith(key) and "must be" in message and "\n" not in message


def test_minres_is_refused_for_gif_and_taken_for_the_symmetric_systems(make_cfg):
    with pytest.raises(ConfigError, match=r"^solver=minres: must solve a symmetric system .* method=gif's is not"):
        validate(make_cfg("solver=minres", "method=gif", drop=("solver",)))
    for method in ("koh", "projecting", "freezing", "second_order"):
        validate(make_cfg("solver=minres", f"method={method}", drop=("solver",)))


def test_the_shipped_configs_validate(make_cfg):
    validate(make_cfg())
    validate(make_cfg("experiment=quickstart"))


def test_cuda_is_refused_where_there_is_none(make_cfg):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA: the refusal cannot happen here")
    with pytest.raises(ConfigError, match="device=cuda: CUDA is not available"):
        validate(make_cfg("device=cuda"))


def test_the_papers_command_composes_the_papers_setting(make_cfg):
    from hydra import compose, initialize_config_module

    from gif_bench import CONFIG_MODULE

    with initialize_config_module(config_module=CONFIG_MODULE, version_base="1.3"):
        cfg = compose("config", overrides=["task=class_removal", "method=gif", "mr=0.05"])
    assert (cfg.dataset.name, cfg.model.name, cfg.model.width, cfg.train.name) == ("cifar10", "vgg11", 1.0, "paper")
    assert (cfg.train.epochs, cfg.train.lr, cfg.train.batch_size) == (200, 0.1, 512)
    assert cfg.task.target_class == 8 and cfg["update"].rate == 0.06 and cfg.hessian.samples == 512
    validate(cfg)


@pytest.mark.parametrize("override", ["mr=1.5", "device=tpu", "task.target_class=12", "paths.cache=/dev/null/cache"])
def test_cli_refuses_with_one_line_and_writes_nothing(tmp_path, override):
    proc = run_cli(*TINY, f"paths.root={tmp_path}", f"paths.cache={tmp_path}/cache", override)
    assert proc.returncode != 0
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("gif-bench: error: " + override)
    assert "Traceback" not in proc.stderr + proc.stdout
    assert list(tmp_path.iterdir()) == []


def test_exact_solver_is_refused_for_a_large_model_before_training(make_cfg, tmp_path):
    from gif_bench.runner import run

    with pytest.raises(ConfigError, match=r"solver=exact: needs a model of at most 20,000 parameters"):
        run(make_cfg(*TINY_VGG, "solver=exact", drop=("solver", "model"), own_cache=True))
    assert not (tmp_path / "cache").exists() and not (tmp_path / "results").exists()


def test_a_ratio_that_selects_nothing_is_refused_before_training(make_cfg, tmp_path):
    from gif_bench.runner import run

    with pytest.raises(ConfigError, match=r"mr=1e-05: selects no parameter"):
        run(make_cfg("mr=0.00001", own_cache=True))
    assert not (tmp_path / "cache").exists()


def test_exact_solver_runs_end_to_end_on_a_small_model(make_cfg):
    from gif_bench.runner import run

    row = run(
        make_cfg("solver=exact", "model=mlp", "model.hidden=[4]", "dataset.image_size=8", drop=("solver", "model"))
    )
    assert row["status"] == "ok" and row["solver"] == "exact" and row["solver_residual"] < 1e-6


def test_cli_offline_paper_command_points_to_digits(tmp_path):
    closed = "http://127.0.0.1:9"
    env = {"http_proxy": closed, "https_proxy": closed, "HTTP_PROXY": closed, "HTTPS_PROXY": closed, "no_proxy": ""}
    proc = run_cli(
        "task=class_removal",
        "method=gif",
        "mr=0.05",
        "logger=none",
        f"paths.root={tmp_path / 'out'}",
        f"paths.data={tmp_path / 'data'}",
        env=env,
    )
    assert proc.returncode != 0
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    assert "dataset=cifar10" in lines[0] and "dataset=digits" in lines[0]
    assert "Traceback" not in proc.stderr + proc.stdout
    assert not (tmp_path / "out" / "results").exists()


def test_run_id_ignores_paths_and_logging(make_cfg, tmp_path):
    from gif_bench.config import run_id

    a = make_cfg(root=tmp_path / "a")
    b = make_cfg("logger=wandb", "force=true", root=tmp_path / "b")
    c = make_cfg("mr=0.1")
    assert run_id(a) == run_id(b) != run_id(c)
    assert OmegaConf.to_container(a.paths) != OmegaConf.to_container(b.paths)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ("task=backdoor task.poison_rate=0", "task.poison_rate=0: must be a number in (0, 1]"),
        ("task=backdoor task.trigger=star", "task.trigger=star: must be one of checkerboard, patch"),
        ("task=backdoor task.target_class=10", "task.target_class=10: must be an integer in [0, 9]"),
        ("task=backdoor task.trigger=patch task.patch_size=40", "task.patch_size=40: must be an integer in [1, 32]"),
        ("task=label_change task.mode=swap", "task.mode=swap: must be one of class, random"),
        ("task=label_change task.new_class=8", "task.new_class=8: must differ from task.source_class"),
        ("task=label_change task.source_fraction=1.5", "task.source_fraction=1.5: must be a number in (0, 1]"),
        ("task=label_change task.mode=random task.random_fraction=0", "task.random_fraction=0: must be a number"),
    ],
)
def test_task_options_are_checked(make_cfg, overrides, message):
    cfg = make_cfg(*overrides.split(), drop=("task",))
    with pytest.raises(ConfigError) as err:
        validate(cfg)
    assert str(err.value).startswith(message)


@pytest.mark.parametrize(
    ("launcher", "target"),
    [
        ("local", "hydra._internal.core_plugins.basic_launcher.BasicLauncher"),
        ("joblib", "hydra_plugins.hydra_joblib_launcher.joblib_launcher.JoblibLauncher"),
        ("slurm", "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher"),
        ("submitit_local", "hydra_plugins.hydra_submitit_launcher.submitit_launcher.LocalLauncher"),
    ],
)
def test_launcher_group_picks_hydras_launcher(launcher, target):
    from hydra import compose, initialize_config_module

    from gif_bench import CONFIG_MODULE

    with initialize_config_module(config_module=CONFIG_MODULE, version_base="1.3"):
        cfg = compose("config", overrides=[f"launcher={launcher}"], return_hydra_config=True)
    assert cfg.hydra.launcher._target_ == target


def test_a_refused_sweep_leaves_no_folder_behind(tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    proc = run_cli(
        "experiment=table1", "profile=cpu", *TINY, f"paths.root={root}", f"paths.cache={root}/cache", "mr=2", "seed=0"
    )
    assert proc.returncode == 2 and proc.stderr.strip().endswith("mr=2: must be a number in (0, 1]")
    assert list(root.rglob("*")) == []


def test_an_interpolation_that_cannot_be_resolved_is_refused_in_one_line(tmp_path, make_cfg):
    """``mr='${nope}'`` names its key, as a bad value does, not Hydra's traceback."""
    with pytest.raises(ConfigError, match=r"^mr: cannot be resolved \(Interpolation key 'nope' not found\)$"):
        validate(make_cfg("mr=${nope}"))
    root = tmp_path / "root"
    root.mkdir()
    proc = run_cli("experiment=quickstart", "mr=${nope}", "logger=none", f"paths.root={root}")
    assert proc.returncode == 2 and proc.stderr.strip().splitlines() == [
        "gif-bench: error: mr: cannot be resolved (Interpolation key 'nope' not found)"
    ]
    assert list(root.rglob("*")) == []


def _refused_sweep(tmp_path, *swept: str) -> str:
    """The one line a quickstart sweep over ``swept`` is refused with (exit 2), having left
    nothing under its root: no job trained or edited, no sweep folder."""
    root = tmp_path / "root"
    root.mkdir()
    proc = run_cli("-m", "experiment=quickstart", *swept, "logger=none", f"paths.root={root}")
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr
    assert list(root.rglob("*")) == []
    return lines[0]


def test_a_sweep_with_one_bad_value_is_refused_in_one_line_before_any_job_runs(tmp_path):
    line = _refused_sweep(tmp_path, "mr=0.05,1.5")
    assert line == "gif-bench: error: job 1 of 2 (mr=1.5): mr=1.5: must be a number in (0, 1]"


DIVERGING = ("solver=lissa", "solver.scale=1e-9", "solver.max_restarts=0")


def test_a_failed_run_ends_in_one_line_naming_its_error_and_its_failed_row(tmp_path):
    proc = run_cli(*TINY, *DIVERGING, f"paths.root={tmp_path}")
    lines = [line for line in proc.stderr.splitlines() if line.startswith("gif-bench")]
    assert proc.returncode == 1 and "Traceback" not in proc.stderr + proc.stdout, proc.stderr
    (row_path,) = (tmp_path / "results").rglob("*.json")
    assert lines == [
        f"gif-bench: run failed: SolverDiverged: {json.loads(row_path.read_text())['error'][16:]} (its row: {row_path})"
    ]
    assert json.loads(row_path.read_text())["status"] == "failed"


def test_a_sweep_goes_on_past_a_failed_job_and_exits_1_naming_it(tmp_path):
    proc = run_cli("-m", *TINY, *DIVERGING, "method=gif,kfac", f"paths.root={tmp_path}")
    assert proc.returncode == 1 and "Traceback" not in proc.stderr + proc.stdout, proc.stderr
    status = {
        r["method"]: r["status"]
        for r in map(json.loads, (p.read_text() for p in (tmp_path / "results").rglob("*.json")))
    }
    assert status == {"gif": "failed", "kfac": "ok"}  # K-FAC, which has no series to diverge, still ran
    assert (
        proc.stderr.strip()
        .splitlines()[-1]
        .startswith("gif-bench: 1 job(s) of the sweep failed: job 0: SolverDiverged")
    )


def test_a_sweep_naming_a_missing_option_is_refused_in_one_line_and_leaves_no_folder(tmp_path):
    line = _refused_sweep(tmp_path, "method=gif,nope")
    assert line.startswith("gif-bench: error: job 1 of 2 (method=nope): In 'config': Could not find 'method/nope'")
    assert "gif" in line.split("one of ")[1].split(", ")
