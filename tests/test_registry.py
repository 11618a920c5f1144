"""Adding a component is one registry entry (and its config): a method and a task registered
here, inside the test, are validated, run, tabulated and plotted like the built-in ones."""

from dataclasses import dataclass

import pytest
import torch
from hydra.core.config_store import ConfigStore

from gif_bench import influence, metrics, plots, rows, runner, tables
from gif_bench.checks import number
from gif_bench.columns import Column
from gif_bench.config import validate
from gif_bench.errors import ConfigError
from gif_bench.influence import tree
from gif_bench.methods import METHODS, MethodSpec
from gif_bench.tasks import TASKS, Edit, TaskSpec


def _gradient_step(run, problem):
    """Δθ = P_J g: a step up U's loss on the selected parameters, no curvature."""
    delta = tree.project(problem.grad, problem.mask)
    return delta, influence.SolveInfo(solver="none", iterations=0, converged=True, residual=0.0)


@dataclass(frozen=True)
class ShareOptions:
    """The throwaway task's config node, typed: what ``build`` and the stop rule read."""

    share: float
    stop_self_acc: float


def _first_examples(task: ShareOptions, data):
    """Remove the first ``share`` of the training set."""
    n = round(task.share * len(data.train))
    return Edit(
        train_set=data.train,
        removed_index=torch.arange(n, device=data.train.y.device),
        eval_sets={"self": data.train.subset(torch.arange(n)), "test": data.test, "val": data.val},
    )


@pytest.fixture
def throwaway():
    store = ConfigStore.instance()
    METHODS.register(MethodSpec(name="throwaway_step", label="Throwaway step", direction=_gradient_step))
    TASKS.register(
        TaskSpec(
            name="throwaway_task",
            label="throwaway removal",
            build=_first_examples,
            metrics=metrics.common,
            reported=metrics.COMMON,
            columns=(Column("test_acc", "max"), Column("self_loss", "max"), Column("gap_to_retrain", "min")),
            gap_keys=("test_acc", "self_acc"),
            validate=lambda cfg: number(cfg, "task.share", 0.0, 1.0, lo_open=True),
            options=ShareOptions,
        )
    )
    store.store(group="method", name="throwaway_step", node={"name": "throwaway_step"})
    store.store(
        group="task", name="throwaway_task", node={"name": "throwaway_task", "share": 0.1, "stop_self_acc": 0.0}
    )
    yield
    METHODS.unregister("throwaway_step")
    TASKS.unregister("throwaway_task")
    store.repo["method"].pop("throwaway_step.yaml")
    store.repo["task"].pop("throwaway_task.yaml")


def test_a_method_and_a_task_registered_here_validate_run_and_show_in_tables_and_plots(throwaway, make_cfg, tmp_path):
    cfg = make_cfg("method=throwaway_step", "task=throwaway_task", drop=("task",))
    validate(cfg)  # accepted: the registries are what validation knows
    with pytest.raises(ConfigError, match=r"^task.share=2: must be a number in \(0, 1\]"):
        validate(make_cfg("method=throwaway_step", "task=throwaway_task", "task.share=2", drop=("task",)))
    with pytest.raises(ConfigError, match=r"method.name=nope: must be one of .*throwaway_step"):
        validate(make_cfg("method=throwaway_step", "method.name=nope"))

    row = runner.run(cfg)
    assert row["status"] == "ok" and row["method"] == "throwaway_step" and row["task"] == "throwaway_task"
    assert row["n_removed"] == round(0.1 * row["n_train"]) and row["hvps"] == 0
    assert row["selector"] == "highest_k_outputs" and 0 < row["n_selected"] < row["n_params"]  # it uses the mask
    assert set(row["trajectory"][-1]) == {"step", "self_acc", "test_acc", "val_acc"}  # the final: every split
    runner.run(make_cfg("method=gif", "task=throwaway_task", drop=("task",)))

    found = rows.collect(tmp_path)
    table = tables.summarize(found, "throwaway_task")
    assert list(table["method"]) == ["before", "gif", "throwaway_step", "retrain"]
    assert {"test_acc_mean", "self_loss_mean", "gap_to_retrain_mean"} <= set(table.columns)
    assert "test_loss_mean" not in table.columns  # the task's columns, not another task's
    markdown = tables.to_markdown(table, "throwaway_task")
    assert "Throwaway step" in markdown and "self_loss ↑" in markdown
    lines = plots.trajectory_lines(found)
    assert [name for name, _ in lines.values()] == ["GIF (MR 5 %)", "Throwaway step (MR 5 %)"]
    assert plots.style("gif") != plots.style("throwaway_step")
    png = plots.trajectories(found, tmp_path / "trajectories.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    points = plots.pareto_points(found)
    assert list(points["method"]) == ["gif", "throwaway_step"] and (points["seconds"] > 0).all()
    assert plots.pareto(found, tmp_path / "pareto.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_an_unknown_name_is_refused_with_the_registered_ones(make_cfg):
    with pytest.raises(KeyError, match="task=nope is not one of class_removal, label_change, backdoor"):
        TASKS["nope"]
    with pytest.raises(ConfigError, match="task.name=nope: must be one of class_removal, label_change, backdoor"):
        validate(make_cfg("task.name=nope"))


def test_every_method_has_its_own_colour_and_marker_in_every_figure():
    styles = [plots.style(method) for method in METHODS]
    assert len({colour for colour, _ in styles}) == len(styles)
    assert len({marker for _, marker in styles}) == len(styles)
