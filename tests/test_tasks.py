"""Tasks: triggers, poisoning, relabelling, the retrain set, and every metric on hand-made predictions."""

import math

import pytest
import torch
from conftest import CONF
from omegaconf import OmegaConf
from torch import nn

from gif_bench import data, metrics, tasks
from gif_bench.data import Split
from gif_bench.settings import Dataset


def _task(name, **kw):
    """``conf/task/<name>.yaml`` (seed 0) with ``kw`` over it, as the run's typed settings."""
    node = OmegaConf.merge(OmegaConf.load(CONF / "task" / f"{name}.yaml"), {"seed": 0}, kw)
    return tasks.settings(OmegaConf.to_container(node, resolve=True))


@pytest.fixture(scope="module")
def digits():
    node = OmegaConf.to_container(OmegaConf.load(CONF / "dataset" / "digits.yaml"))
    return data.load(Dataset.of(node), "unused")


def test_checkerboard_adds_to_alternate_pixels_and_clamps():
    pixels = torch.full((2, 3, 4, 5), 100.0)
    pixels[0, 1, 0, 0] = 250.0  # an "on" pixel near the top: clamped
    pixels[0, 1, 0, 1] = 250.0  # an "off" pixel: untouched
    out = tasks.checkerboard(pixels, 16.0)
    on = torch.tensor([[(r + c) % 2 == 0 for c in range(5)] for r in range(4)])
    expected = torch.where(on, 116.0, 100.0).expand(2, 3, 4, 5).clone()
    expected[0, 1, 0, 0], expected[0, 1, 0, 1] = 255.0, 250.0
    assert torch.equal(out, expected)


def test_corner_patch_whitens_exactly_the_bottom_right_square():
    pixels = torch.rand(2, 1, 8, 8) * 200
    out = tasks.corner_patch(pixels, 3)
    changed = out != pixels
    assert torch.equal(out[..., 5:, 5:], torch.full((2, 1, 3, 3), 255.0))
    changed[..., 5:, 5:] = False
    assert not changed.any()


def test_trigger_is_stamped_in_pixel_space(digits):
    x = digits.train.x[:5]
    cfg = _task("backdoor")
    diff = digits.to_pixels(tasks.add_trigger(x, digits, cfg.options)) - digits.to_pixels(x)
    expected = tasks.checkerboard(digits.to_pixels(x)) - digits.to_pixels(x)
    assert torch.allclose(diff, expected, atol=1e-3)
    assert diff[..., 0, 1].abs().max() < 1e-3 and diff.max() > 15.9


def test_poisoning_rate_labels_and_seed(digits):
    cfg = _task("backdoor", poison_rate=0.1, target_class=4)
    poisoned, index = tasks.poison(digits.train, digits, cfg.options)
    m = len(digits.train)
    assert len(index) == round(0.1 * m) and len(index.unique()) == len(index)
    assert (digits.train.y[index] != 4).all()  # only real label flips
    assert (poisoned.y[index] == 4).all()
    rest = torch.ones(m, dtype=torch.bool)
    rest[index] = False
    assert torch.equal(poisoned.y[rest], digits.train.y[rest]) and torch.equal(poisoned.x[rest], digits.train.x[rest])
    assert not torch.equal(poisoned.x[index], digits.train.x[index])
    again, index_again = tasks.poison(digits.train, digits, cfg.options)
    assert torch.equal(index, index_again) and torch.equal(again.x, poisoned.x)
    _, other = tasks.poison(digits.train, digits, _task("backdoor", seed=1).options)
    assert not torch.equal(index, other)


def test_backdoor_edit_sets(digits):
    edit = tasks.build(_task("backdoor"), digits)
    assert torch.equal(edit.corrected.y, digits.train.y[edit.removed_index])
    assert (edit.removed.y == 4).all() and torch.equal(edit.removed.x, edit.corrected.x)
    attack = edit.eval_sets["attack"]
    assert len(attack) == int((digits.test.y != 4).sum()) and (attack.y == 4).all()
    retrain = edit.retrain_set()  # triggered images, true labels
    assert torch.equal(retrain.y, digits.train.y) and torch.equal(retrain.x, edit.train_set.x)


def test_label_change_by_class_and_at_random(digits):
    y = digits.train.y
    index, new = tasks.relabel(y, _task("label_change", mode="class", source_fraction=0.5).options, 10)
    n8 = int((y == 8).sum())
    assert len(index) == round(0.5 * n8) and (y[index] == 8).all() and (new == 0).all()
    index, new = tasks.relabel(y, _task("label_change", mode="random", random_fraction=0.1).options, 10)
    assert len(index) == round(0.1 * len(y)) and (new != y[index]).all() and len(new.unique()) > 5
    again, new_again = tasks.relabel(y, _task("label_change", mode="random", random_fraction=0.1).options, 10)
    assert torch.equal(index, again) and torch.equal(new, new_again)
    edit = tasks.build(_task("label_change"), digits)
    retrain = edit.retrain_set()
    assert (retrain.y[edit.removed_index] == 0).all() and int((retrain.y == 8).sum()) == 0
    assert torch.equal(edit.eval_sets["self"].y, y[edit.removed_index])


def test_class_removal_retrain_set_drops_the_class(digits):
    edit = tasks.build(_task("class_removal"), digits)
    retrain = edit.retrain_set()
    assert len(retrain) == edit.m - edit.u and not (retrain.y == 8).any()


class _Lookup(nn.Module):
    """Predicts ``answers[id]`` for an input whose first pixel holds its id."""

    def __init__(self, answers):
        super().__init__()
        self.answers = torch.tensor(answers)

    def forward(self, x):
        ids = x[:, 0, 0, 0].long()
        return nn.functional.one_hot(self.answers[ids], 10).float() * 10


def _split(ids, labels):
    x = torch.zeros(len(ids), 1, 2, 2)
    x[:, 0, 0, 0] = torch.tensor(ids, dtype=torch.float)
    return Split(x, torch.tensor(labels))


def test_backdoor_metrics_on_hand_made_predictions():
    # ids 0-3 poisoned training images (true 1,2,3,5; target 4), 4-7 clean test, 8-10 triggered test
    answers = [4, 2, 4, 5, 0, 1, 9, 3, 4, 4, 7]
    edit = tasks.Edit(
        train_set=_split([0, 1, 2, 3], [4, 4, 4, 4]),
        removed_index=torch.arange(4),
        corrected=_split([0, 1, 2, 3], [1, 2, 3, 5]),
        eval_sets={
            "self": _split([0, 1, 2, 3], [4, 4, 4, 4]),
            "relabel": _split([0, 1, 2, 3], [1, 2, 3, 5]),
            "test": _split([4, 5, 6, 7], [0, 1, 2, 3]),
            "val": _split([4, 5], [0, 2]),
            "attack": _split([8, 9, 10], [4, 4, 4]),
            "attack_val": _split([10], [4]),
        },
    )
    out = tasks.backdoor.evaluate(_Lookup(answers), edit)
    assert out["clean_acc"] == out["test_acc"] == 75.0  # ids 4, 5, 7 right; id 6 (a 2) predicted 9
    assert out["corrupt_acc"] == out["self_acc"] == 50.0  # ids 0 and 2 still predicted 4
    assert out["relabel_acc"] == 50.0  # ids 1 (2) and 3 (5)
    assert out["attack_success"] == pytest.approx(200 / 3)
    assert out["val_acc"] == 50.0 and out["val_attack_success"] == 0.0
    assert out["f1"] == pytest.approx(metrics.f1(75.0, 50.0))


def test_label_change_and_class_removal_metrics_on_hand_made_predictions():
    answers = [3, 3, 7, 1, 1, 2, 0]
    edit = tasks.Edit(
        train_set=_split([0, 1, 2], [3, 3, 3]),
        removed_index=torch.arange(3),
        corrected=_split([0, 1, 2], [7, 7, 7]),
        eval_sets={
            "self": _split([0, 1, 2], [3, 3, 3]),
            "changed": _split([0, 1, 2], [7, 7, 7]),
            "test": _split([3, 4, 5], [1, 2, 2]),
            "val": _split([6], [0]),
        },
    )
    out = tasks.label_change.evaluate(_Lookup(answers), edit)
    assert out["changed_old_acc"] == out["self_acc"] == pytest.approx(200 / 3)
    assert out["changed_new_acc"] == pytest.approx(100 / 3)
    assert out["test_acc"] == pytest.approx(200 / 3) and out["val_acc"] == 100.0
    assert out["val_f1"] == pytest.approx(metrics.f1(100.0, 200 / 3))

    removal = tasks.Edit(
        train_set=_split([0, 1, 2], [3, 3, 3]),
        removed_index=torch.arange(3),
        eval_sets={
            "self": _split([0, 1, 2], [3, 3, 3]),
            "test": _split([3, 4, 5], [1, 1, 2]),
            "forget_test": _split([0, 2], [3, 3]),
            "val": _split([6], [0]),
        },
    )
    out = tasks.class_removal.evaluate(_Lookup(answers), removal)
    assert out["test_acc"] == 100.0 and out["self_acc"] == pytest.approx(200 / 3)
    assert out["forget_test_acc"] == 50.0
    assert out["f1"] == pytest.approx(2 * 1.0 * (1 / 3) / (1 + 1 / 3))


def test_gap_to_retrain_is_the_mean_absolute_difference_over_the_task_keys():
    a = {"clean_acc": 90.0, "relabel_acc": 80.0, "attack_success": 10.0, "test_acc": 0.0}
    b = {"clean_acc": 95.0, "relabel_acc": 99.0, "attack_success": 4.0, "test_acc": 50.0}
    assert metrics.gap(a, b, "backdoor") == pytest.approx((5 + 19 + 6) / 3)
    c = {"test_acc": 90.0, "self_acc": 1.0, "forget_test_acc": math.nan}
    d = {"test_acc": 92.0, "self_acc": 0.0, "forget_test_acc": 0.0}
    assert metrics.gap(c, d, "class_removal") == pytest.approx(1.5)


def _tiny_relabelling():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 3)).double()
    x = torch.randn(10, 1, 2, 2, dtype=torch.double)
    y = torch.randint(0, 3, (10,))
    index = torch.tensor([1, 4, 7])
    new = (y[index] + 1) % 3
    edit = tasks.Edit(train_set=Split(x, y), removed_index=index, corrected=Split(x[index], new))
    return model, edit, x, y, index, new


def test_relabelling_gradient_is_the_difference_of_old_and_new_label_gradients():
    from gif_bench.editing import removal_gradient

    model, edit, x, y, index, new = _tiny_relabelling()
    params = {k: v.detach() for k, v in model.named_parameters()}
    g = removal_gradient(model, edit, params, chunk=2)  # chunks of U add up
    ce = nn.functional.cross_entropy
    diff = ce(model(x[index]), y[index], reduction="sum") - ce(model(x[index]), new, reduction="sum")
    expected = torch.autograd.grad(diff / (10 - 3), list(model.parameters()))
    for (k, _), e in zip(model.named_parameters(), expected):
        assert torch.allclose(g[k], e, atol=1e-12), k


def test_selectors_rank_a_relabelling_by_its_edit_loss():
    from gif_bench.editing import edit_batch, edit_loss

    model, edit, x, y, index, new = _tiny_relabelling()
    xs, ys = edit_batch(edit, torch.arange(3))
    assert torch.equal(xs, x[index]) and torch.equal(ys, torch.stack([y[index], new], 1))
    logits = model(xs)
    ce = nn.functional.cross_entropy
    assert torch.allclose(edit_loss(logits, ys), ce(logits, y[index]) - ce(logits, new))
    removal = tasks.Edit(train_set=Split(x, y), removed_index=index)
    xr, yr = edit_batch(removal, torch.arange(3))
    assert torch.equal(yr, y[index]) and torch.allclose(edit_loss(model(xr), yr), ce(model(xr), yr))


def test_random_removal_draws_a_seeded_share_optionally_within_a_class(digits):
    edit = tasks.build(_task("random_removal"), digits)
    again = tasks.build(_task("random_removal"), digits)
    other = tasks.build(_task("random_removal", seed=1), digits)
    assert edit.u == round(0.1 * edit.m) and torch.equal(edit.removed_index, again.removed_index)
    assert not torch.equal(edit.removed_index, other.removed_index)
    assert len(edit.retrain_set()) == edit.m - edit.u and edit.corrected is None
    assert set(edit.eval_sets) == {"self", "test", "val"} and len(edit.eval_sets["test"]) == len(digits.test)
    within = tasks.build(_task("random_removal", within_class=3, fraction=0.5), digits)
    assert set(within.removed.y.tolist()) == {3}
    assert within.u == round(0.5 * int((digits.train.y == 3).sum()))


def test_random_removal_stops_and_picks_by_the_validation_accuracy_alone():
    from gif_bench.tasks import TASKS

    spec = TASKS["random_removal"]
    still_memorised = {"self_acc": 100.0, "val_acc": 97.0, "test_acc": 10.0}
    unseen_like = {"self_acc": 96.5, "val_acc": 97.0, "test_acc": 10.0}
    too_far = {"self_acc": 80.0, "val_acc": 96.0, "test_acc": 99.0}
    assert not spec.stop(still_memorised, None) and spec.stop(unseen_like, None) and spec.stop(too_far, None)
    best = max([still_memorised, too_far, unseen_like], key=spec.score)
    assert best is unseen_like  # closest to validation, whatever the test split says
    tie = {"self_acc": 97.0, "val_acc": 97.5, "test_acc": 0.0}
    assert max([unseen_like, tie], key=spec.score) is tie  # same distance: the higher validation accuracy


def test_each_split_gives_its_own_accuracy_and_loss():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(12, 4))
    splits = [Split(torch.randn(n, 3, 2, 2), torch.randint(0, 4, (n,))) for n in (7, 0, 300, 1)]
    got = metrics.accuracies_and_losses(model, splits, batch_size=64)  # batches straddle the splits
    for (acc, loss), split in zip(got, splits):
        if len(split) == 0:
            assert math.isnan(acc) and math.isnan(loss)
            continue
        with torch.no_grad():
            logits = model(split.x)
        by_hand = 100.0 * float((logits.argmax(1) == split.y).float().mean())
        assert acc == pytest.approx(by_hand)
        assert loss == pytest.approx(float(nn.functional.cross_entropy(logits, split.y)), rel=1e-5)
    assert metrics.accuracy_and_loss(model, splits[2]) == pytest.approx(got[2])


def test_shared_logits_run_one_forward_per_split_for_every_metric_in_the_block():
    """Inside ``metrics.shared_logits()`` the task's metrics and the oracle-relative ones read the
    same forward of each evaluation set; outside, each call runs its own. Same numbers."""
    from gif_bench import oracle

    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(12, 4))
    test, own = (Split(torch.randn(n, 3, 2, 2), torch.randint(0, 4, (n,))) for n in (50, 20))
    seen = []
    model.register_forward_hook(lambda m, inputs, out: seen.append(len(inputs[0])))

    def everything():
        return metrics.accuracies_and_losses(model, [test, own]), oracle.logits(model, test), oracle.logits(model, own)

    apart = everything()
    assert sum(seen) == 2 * (50 + 20)
    seen.clear()
    with metrics.shared_logits():
        together = everything()
        with torch.no_grad():
            model[1].bias.add_(1.0)  # (a block must not change the parameters: this shows why)
        stale = metrics.accuracies_and_losses(model, [test])
    assert sum(seen) == 50 + 20
    assert together[0] == apart[0] and torch.equal(together[1], apart[1]) and torch.equal(together[2], apart[2])
    assert stale[0] == together[0][0]  # the memo, not the new parameters: blocks are per iterate
    seen.clear()
    metrics.accuracies_and_losses(model, [test])  # outside any block: computed afresh
    assert sum(seen) == 50
