"""Typed settings: every recipe of conf/train becomes a Recipe holding its values, every
method's and task's config its options with every key, a run's config its settings; an unknown
optimizer or schedule is refused by validation in one line."""

from collections.abc import Mapping
from dataclasses import dataclass, fields

import pytest
from conftest import CONF
from omegaconf import OmegaConf

from gif_bench import config, sweeps, unlearning
from gif_bench.config import validate
from gif_bench.errors import ConfigError
from gif_bench.methods import METHODS
from gif_bench.settings import Dataset, Recipe, typed
from gif_bench.tasks import TASKS


@pytest.mark.parametrize("recipe", ["paper", "mnist", "fast"])
def test_every_training_recipe_becomes_a_recipe_with_its_values(recipe):
    node = OmegaConf.to_container(sweeps.compose([f"train={recipe}"]).train, resolve=True)
    typed = Recipe.of(node)
    for key, value in node.items():
        assert getattr(typed, key) == (tuple(value) if isinstance(value, list) else value), key
    assert typed.but(epochs=3).epochs == 3 and typed.epochs == node["epochs"]  # frozen: a copy changes


def test_an_unlearners_recipe_is_the_trained_one_at_its_epochs_and_constant_rate():
    run = config.run_settings(sweeps.compose(["method=finetune", "profile=cpu"]))
    trained, derived = run.train, unlearning.recipe(run)
    assert trained == Recipe.of(run.fingerprint["train"])
    assert derived == trained.but(epochs=unlearning.epochs(run), lr=0.1 * trained.lr, schedule="constant")


@pytest.mark.parametrize("override", ["train.optimizer=adam", "train.schedule=linear"])
def test_an_unknown_optimizer_or_schedule_is_refused(make_cfg, override):
    with pytest.raises(ConfigError, match=rf"^{override}: must be one of "):
        validate(make_cfg(override))


@pytest.mark.parametrize("model", ["small_cnn", "mlp"])
def test_a_reports_setting_line_names_the_data_model_recipe_and_solver(model):
    import pandas as pd

    from gif_bench.report_header import setting

    cfg = sweeps.compose([f"model={model}", "dataset=digits", "train=fast", "solver=cg"])
    line = setting(cfg, pd.DataFrame({"n_train": [1000, 1000]}))
    assert "dataset `digits`, 1,000 training images" in line and f"model `{model}`" in line
    assert ("at width" in line) == (model == "small_cnn")  # mlp has no width
    assert "recipe `fast` (30 epochs" in line and "solver `cg` (max_iter=300" in line


def _node_keys(group: str, name: str) -> set[str]:
    return set(OmegaConf.load(CONF / group / f"{name}.yaml")) - {"name"}


@pytest.mark.parametrize("method", list(METHODS))
def test_every_method_config_becomes_its_options_with_every_key(method):
    """Each key of conf/method/<name>.yaml reaches ``run.method.options`` with its value: none is
    dropped on the way to the typed settings."""
    run = config.run_settings(sweeps.compose([f"method={method}", "logger=none"]))
    node = run.fingerprint["method"]
    options = run.method.options
    assert run.method.name == method
    if METHODS[method].options is None:
        assert _node_keys("method", method) == set() and options is None
        return
    assert _node_keys("method", method) <= {f.name for f in fields(options)}
    for key in _node_keys("method", method):
        value = getattr(options, key)
        assert (dict(value) if isinstance(value, Mapping) else value) == node[key], key


@pytest.mark.parametrize("task", list(TASKS))
def test_every_task_config_becomes_its_options_with_every_key(task):
    run = config.run_settings(sweeps.compose([f"task={task}", "logger=none"]))
    options, node = run.task.options, run.fingerprint["task"]
    assert _node_keys("task", task) <= {f.name for f in fields(options)}
    for key in _node_keys("task", task):
        assert getattr(options, key) == node[key], key


def test_the_run_settings_hold_the_configs_values():
    run = config.run_settings(sweeps.compose(["experiment=quickstart", "logger=none", "mr=0.15", "seed=3"]))
    node = run.fingerprint
    assert (run.mr, run.seed, run.name) == (0.15, 3, node["name"])
    assert run.dataset == Dataset.of(node["dataset"]) and run.dataset.mean == tuple(node["dataset"]["mean"])
    assert run.dataset.crop_padding == node["dataset"]["augment"]["crop_padding"]
    assert run.model.width == node["model"]["width"] and run.update.rate == node["update"]["rate"]
    assert {"name": run.solver.name, **run.solver.options} == node["solver"]
    assert run.hessian.samples == node["hessian"]["samples"] and run.selector.name == node["selector"]["name"]
    again = config.canonicalize(sweeps.compose(["experiment=quickstart", "logger=none", "mr=0.15", "seed=3"]))
    assert run.run_id == config.run_id(again)  # the canonical config's id, as the rows had it


def test_typed_converts_each_field_to_its_annotation_and_keeps_defaults():
    @dataclass(frozen=True)
    class Example:
        count: int
        rate: float
        sizes: tuple[int, ...] = ()
        label: str | None = None
        flag: bool = False

    made = typed(Example, {"count": 3.0, "rate": 1, "sizes": [1, 2], "unknown": "left out"})
    assert made == Example(count=3, rate=1.0, sizes=(1, 2))
    assert isinstance(made.rate, float) and isinstance(made.sizes, tuple)
    assert typed(Example, {"count": 1, "rate": 0.5, "label": None}).label is None
