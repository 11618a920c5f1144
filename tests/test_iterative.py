"""Iterative editing: ``update.recompute_every`` and ``update.stall_boost``."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from gif_bench import line_search, runner
from gif_bench.errors import ConfigError


def _metrics(self_acc):
    def metric_fn(model, edit):
        return {"self_acc": self_acc(model), "val_acc": 50.0, "val_f1": 0.0, "test_acc": 50.0}

    return metric_fn


def _model() -> nn.Module:
    model = nn.Linear(2, 1, bias=False)
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[3.0, 4.0]]))
    return model


def test_recomputing_replaces_the_direction_every_n_steps():
    """Stepping toward the origin: the fixed direction overshoots along its line, the recomputed
    one turns at every recomputation (each step has length ``rate``)."""
    calls = []

    def toward_origin(step: int) -> dict:
        calls.append(step)
        return {"weight": -model.weight.detach().clone()}

    model = _model()
    fixed = {"weight": torch.tensor([[1.0, 0.0]])}
    kwargs = dict(rate=1.0, max_steps=4, stop=lambda m: False, metric_fn=_metrics(lambda m: 100.0))
    line_search.apply_updates(model, None, fixed, recompute_every=2, recompute=toward_origin, **kwargs)
    assert calls == [2]  # after step 2, not after the last step
    # steps 1-2 along (1, 0): (5, 4); then twice along −(5, 4)/‖(5, 4)‖
    expected = torch.tensor([5.0, 4.0]) * (1 - 2 / torch.tensor([5.0, 4.0]).norm())
    torch.testing.assert_close(model.weight.detach().squeeze(0), expected)

    once = _model()
    line_search.apply_updates(once, None, fixed, **kwargs)
    torch.testing.assert_close(once.weight.detach().squeeze(0), torch.tensor([7.0, 4.0]))


def test_the_rate_is_boosted_when_u_accuracy_stalls():
    model = _model()
    unit = {"weight": torch.tensor([[1.0, 0.0]])}
    traj = line_search.apply_updates(
        model,
        None,
        unit,
        rate=0.5,
        max_steps=5,
        stop=lambda m: False,
        metric_fn=_metrics(lambda m: 100.0),  # no progress ever
        stall_boost=5.0,
        stall_patience=2,
    )
    # boosts after steps 3 and 5 (each compared with the step `patience` before): 3·0.5 + 2·2.5
    assert traj.boosts == 2
    torch.testing.assert_close(model.weight.detach().squeeze(0), torch.tensor([3.0 + 1.5 + 5.0, 4.0]))

    progressing = _model()
    steps = iter(range(100, 0, -1))
    traj = line_search.apply_updates(
        progressing, None, unit, rate=0.5, max_steps=5, stop=lambda m: False,
        metric_fn=_metrics(lambda m: float(next(steps))), stall_boost=5.0, stall_patience=2,
    )  # fmt: skip
    assert traj.boosts == 0


def test_a_recomputed_run_records_its_directions_and_changes_the_outcome(make_cfg):
    never = ("update.max_steps=4", "update.max_val_drop=100", "task.stop_self_acc=0")  # four steps, always
    once = runner.run(make_cfg(*never))
    again = runner.run(make_cfg(*never, "update.recompute_every=1"))
    assert once["directions"] == 1 and once["recompute_every"] is None
    assert again["directions"] == again["steps"] == 4 and again["recompute_every"] == 1
    assert again["hvps"] > once["hvps"] and again["before_self_loss"] == once["before_self_loss"]
    assert again["self_loss"] != pytest.approx(once["self_loss"], rel=1e-6)  # a different path


@pytest.mark.parametrize(
    "override, key",
    [
        ("update.recompute_every=0", "update.recompute_every=0"),
        ("update.stall_boost=-1", "update.stall_boost=-1"),
        ("update.stall_patience=0", "update.stall_patience=0"),
        ("method=finetune method.epochs=0", "method.epochs=0"),
        ("method=kfac method.damping=-1", "method.damping=-1"),
        ("method=kfac method.fisher_type=exact", "method.fisher_type=exact"),
        ("method=arnoldi method.rank=500 method.iterations=100", "method.rank=500"),
        ("method=salun method.sparsity=1.5", "method.sparsity=1.5"),
    ],
)
def test_bad_options_of_the_new_methods_fail_before_training(make_cfg, override, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        runner.run(make_cfg(*override.split()))
