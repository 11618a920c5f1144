"""Typed settings: every recipe of conf/train becomes a Recipe holding its values, and an
unknown optimizer or schedule is refused by validation in one line."""

import pytest
from omegaconf import OmegaConf

from gif_bench import sweeps, unlearning
from gif_bench.config import validate
from gif_bench.errors import ConfigError
from gif_bench.settings import Recipe


@pytest.mark.parametrize("recipe", ["paper", "mnist", "fast"])
def test_every_training_recipe_becomes_a_recipe_with_its_values(recipe):
    node = OmegaConf.to_container(sweeps.compose([f"train={recipe}"]).train, resolve=True)
    typed = Recipe.of(node)
    for key, value in node.items():
        assert getattr(typed, key) == (tuple(value) if isinstance(value, list) else value), key
    assert typed.but(epochs=3).epochs == 3 and typed.epochs == node["epochs"]  # frozen: a copy changes


def test_an_unlearners_recipe_is_the_trained_one_at_its_epochs_and_constant_rate():
    cfg = sweeps.compose(["method=finetune", "profile=cpu"])
    trained, derived = Recipe.of(OmegaConf.to_container(cfg.train, resolve=True)), unlearning.recipe(cfg)
    assert derived == trained.but(epochs=unlearning.epochs(cfg), lr=0.1 * trained.lr, schedule="constant")


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
