"""The fine-tuning unlearners' update on one SGD step of a linear softmax model, against the
gradient of their objective computed by hand; and their rows through the harness."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from gif_bench import config, runner, sweeps, unlearning
from gif_bench.data import Data, Split
from gif_bench.methods import METHODS, ssd
from gif_bench.settings import Component, Recipe
from gif_bench.tasks import Edit

C, D, N = 3, 5, 24
LR = 0.5


def _setup(relabel: bool = False):
    torch.manual_seed(0)
    x = torch.randn(N, 1, 1, D)
    y = torch.randint(0, C, (N,))
    train = Split(x, y)
    removed = torch.arange(0, N, 4)  # U: 6 examples
    corrected = Split(x[removed], (y[removed] + 1) % C) if relabel else None
    data = Data("toy", train, train, train, C, 1, False, 0, torch.zeros(1, 1, 1, 1), torch.ones(1, 1, 1, 1))
    edit = Edit(train, removed, corrected=corrected)
    model = nn.Sequential(nn.Flatten(), nn.Linear(D, C))
    return model, edit, data


def _cfg(method: str, **extra):
    """The run's settings for ``method`` at one epoch and lr_factor 1 (``extra`` over its other
    options), on a recipe of one full batch per epoch at :data:`LR`."""
    base = config.run_settings(sweeps.compose([f"method={method}", "logger=none", "seed=0"]))
    options = replace(base.method.options, epochs=1, lr_factor=1.0, **extra)
    recipe = Recipe(  # one batch: one step per epoch, the whole set's mean loss
        name="toy", lr=LR, momentum=0.0, weight_decay=0.0, batch_size=10_000, epochs=99, schedule="cosine"
    )
    return base.but(method=Component(method, options), train=recipe, scale_epochs=False)


def _step(method: str, relabel: bool = False, **extra):
    """(θ before, θ after one epoch = one step, model, edit, plan)."""
    model, edit, data = _setup(relabel)
    cfg = _cfg(method, **extra)
    plan = METHODS[method].unlearn(cfg, model, edit, data)
    before = {k: v.detach().clone() for k, v in model.named_parameters()}
    traj = unlearning.unlearn(
        cfg, model, edit, data, plan, metric_fn=lambda m, e: {"val_f1": 0.0, "val_acc": 0.0}, score=lambda m: 0
    )
    assert len(traj.steps) == 1 and traj.stop_reason == "epochs"
    after = {k: v.detach().clone() for k, v in model.named_parameters()}
    model.load_state_dict({**model.state_dict(), **before})
    return before, after, model, edit, plan


def _grad(model: nn.Module, loss_of_logits) -> dict[str, torch.Tensor]:
    params = dict(model.named_parameters())
    return dict(zip(params, torch.autograd.grad(loss_of_logits(model), list(params.values()))))


def _assert_step(before, after, expected_grad, sign=-1.0):
    for k in before:
        torch.testing.assert_close(after[k] - before[k], sign * LR * expected_grad[k])


def test_finetune_steps_down_the_retained_loss():
    before, after, model, edit, plan = _step("finetune")
    r = edit.retained_index
    g = _grad(model, lambda m: F.cross_entropy(m(edit.train_set.x[r]), edit.train_set.y[r]))
    _assert_step(before, after, g)
    assert plan.form == "fine-tune on R"


def test_finetune_of_a_relabelling_trains_on_the_corrected_labels():
    before, after, model, edit, plan = _step("finetune", relabel=True)
    fixed = edit.retrain_set()
    g = _grad(model, lambda m: F.cross_entropy(m(fixed.x), fixed.y))
    _assert_step(before, after, g)
    assert "corrected" in plan.form


def test_gradient_ascent_moves_the_loss_on_u_up():
    before, after, model, edit, _ = _step("grad_ascent")
    u = edit.removed
    g = _grad(model, lambda m: F.cross_entropy(m(u.x), u.y))
    _assert_step(before, after, g, sign=+1.0)
    loss_before = F.cross_entropy(model(u.x), u.y)
    model.load_state_dict({**model.state_dict(), **after})
    assert F.cross_entropy(model(u.x), u.y) > loss_before


def test_gradient_ascent_of_a_relabelling_ascends_the_old_and_descends_the_new_labels():
    before, after, model, edit, _ = _step("grad_ascent", relabel=True)
    u, fixed = edit.removed, edit.corrected
    g = _grad(model, lambda m: F.cross_entropy(m(u.x), u.y) - F.cross_entropy(m(fixed.x), fixed.y))
    _assert_step(before, after, g, sign=+1.0)


def test_random_labels_train_u_relabelled_with_r():
    before, after, model, edit, plan = _step("random_label")
    r = edit.retained_index
    shuffled = unlearning.random_labels(edit, C, seed=0)
    assert (shuffled.y != edit.removed.y).all()
    x = torch.cat([edit.train_set.x[r], shuffled.x])
    y = torch.cat([edit.train_set.y[r], shuffled.y])
    _assert_step(before, after, _grad(model, lambda m: F.cross_entropy(m(x), y)))
    assert len(plan.train_set) == N


def test_l1_sparse_adds_the_l1_subgradient_at_full_weight_on_the_first_step():
    before, after, model, edit, _ = _step("l1_sparse", l1=0.01)
    r = edit.retained_index
    g = _grad(model, lambda m: F.cross_entropy(m(edit.train_set.x[r]), edit.train_set.y[r]))
    _assert_step(before, after, {k: g[k] + 0.01 * before[k].sign() for k in g})
    assert unlearning.l1_penalty(2.0)(model, 0.75).item() == pytest.approx(
        0.5 * sum(p.abs().sum() for p in model.parameters()).item()
    )


def test_salun_steps_random_labels_on_the_saliency_mask_only():
    before, after, model, edit, plan = _step("salun", sparsity=0.5)
    u = edit.removed
    saliency = _grad(model, lambda m: F.cross_entropy(m(u.x), u.y, reduction="sum"))
    magnitude = torch.cat([s.abs().flatten() for s in saliency.values()])
    threshold = magnitude.sort(descending=True).values[magnitude.numel() // 2 - 1]
    mask = {k: (s.abs() >= threshold).float() for k, s in saliency.items()}
    assert sum(int(m.sum()) for m in mask.values()) == magnitude.numel() // 2
    r = edit.retained_index
    shuffled = unlearning.random_labels(edit, C, seed=0)
    x = torch.cat([edit.train_set.x[r], shuffled.x])
    y = torch.cat([edit.train_set.y[r], shuffled.y])
    g = _grad(model, lambda m: F.cross_entropy(m(x), y))
    _assert_step(before, after, {k: g[k] * mask[k] for k in g})
    for k in mask:
        assert torch.equal(plan.mask[k], mask[k])


def test_neggrad_plus_descends_r_and_ascends_u_in_one_step():
    """α · ∇ℓ(R) − (1 − α) · ∇ℓ(U), each a batch mean (U's batch holds all of U here)."""
    before, after, model, edit, plan = _step("neggrad_plus", alpha=0.9, forget_batch=100)
    r, u = edit.retained_index, edit.removed
    g_r = _grad(model, lambda m: F.cross_entropy(m(edit.train_set.x[r]), edit.train_set.y[r]))
    g_u = _grad(model, lambda m: F.cross_entropy(m(u.x), u.y))
    _assert_step(before, after, {k: 0.9 * g_r[k] - 0.1 * g_u[k] for k in g_r})
    assert plan.form.startswith("NegGrad+: 0.9")


def test_neggrad_plus_of_a_relabelling_descends_the_corrected_set_and_ascends_the_edit_loss():
    before, after, model, edit, _ = _step("neggrad_plus", relabel=True, alpha=0.7, forget_batch=100)
    fixed, u, new = edit.retrain_set(), edit.removed, edit.corrected
    g_r = _grad(model, lambda m: F.cross_entropy(m(fixed.x), fixed.y))
    g_u = _grad(model, lambda m: F.cross_entropy(m(u.x), u.y) - F.cross_entropy(m(new.x), new.y))
    _assert_step(before, after, {k: 0.7 * g_r[k] - 0.3 * g_u[k] for k in g_r})


def test_neggrad_plus_cycles_us_batches_in_a_seeded_order():
    """With batches of 4 of U's 6, the first step ascends the first 4 of a seeded permutation."""
    before, after, model, edit, plan = _step("neggrad_plus", alpha=0.5, forget_batch=4)
    first = torch.randperm(edit.u, generator=torch.Generator().manual_seed(0))[:4]
    r, u = edit.retained_index, edit.removed
    g_r = _grad(model, lambda m: F.cross_entropy(m(edit.train_set.x[r]), edit.train_set.y[r]))
    g_u = _grad(model, lambda m: F.cross_entropy(m(u.x[first]), u.y[first]))
    _assert_step(before, after, {k: 0.5 * g_r[k] - 0.5 * g_u[k] for k in g_r})
    assert plan.extra_examples == 4


def _softmax_grad(model, x, y):
    """The batch-mean cross-entropy gradient of the linear softmax model, in closed form:
    ∂/∂W = (p − onehot(y))ᵀ x / n and ∂/∂b = mean(p − onehot(y))."""
    linear = model[1]
    x = x.flatten(1)
    p = torch.softmax(x @ linear.weight.T + linear.bias, dim=1)
    p[torch.arange(len(y)), y] -= 1.0
    return {"1.weight": p.T @ x / len(y), "1.bias": p.mean(0)}


def _fisher(model, split, batch):
    chunks = [slice(i, i + batch) for i in range(0, len(split), batch)]
    grads = [_softmax_grad(model, split.x[sl], split.y[sl]) for sl in chunks]
    return {k: sum(g[k] ** 2 for g in grads) / len(chunks) for k in grads[0]}


def test_ssd_dampens_the_parameters_more_important_to_u_than_to_the_training_set():
    model, edit, data = _setup()
    run = _cfg("finetune").but(method=Component("ssd", ssd.Options(selection=1.0, dampening=0.5, importance_batch=4)))
    before = {k: v.detach().clone() for k, v in model.named_parameters()}
    i_u, i_d = _fisher(model, edit.removed, 4), _fisher(model, edit.train_set, 4)  # by hand, before the plan
    plan = METHODS["ssd"].unlearn(run, model, edit, data)
    for name, p in model.named_parameters():
        chosen = i_u[name] > 1.0 * i_d[name]
        factor = torch.where(chosen, (0.5 * i_d[name] / i_u[name]).clamp(max=1.0), torch.ones_like(p))
        torch.testing.assert_close(p.detach(), before[name] * factor)
        assert torch.equal(plan.mask[name], chosen.float())
    dampened = sum(int(m.sum()) for m in plan.mask.values())
    assert 0 < dampened < sum(p.numel() for p in model.parameters())  # the check can fail both ways
    assert plan.train_set is None and plan.examples == edit.u + N
    traj = unlearning.unlearn(
        run, model, edit, data, plan, metric_fn=lambda m, e: {"val_f1": 0.0, "val_acc": 0.0}, score=lambda m: 0
    )
    assert [s["step"] for s in traj.steps] == [1] and traj.stop_reason == "done"
    assert unlearning.epochs(run) == 0 and unlearning.examples(run, plan) == edit.u + N


def _kl_by_hand(student_logits, teacher_logits, t):
    """T² · mean over the batch of Σ_c p_t (log p_t − log p_s), the softened outputs written out."""
    p_t = torch.softmax(teacher_logits / t, dim=1)
    log_p_s = torch.log_softmax(student_logits / t, dim=1)
    return t * t * (p_t * (torch.log(p_t) - log_p_s)).sum(1).mean()


def test_scrub_ascends_the_divergence_on_u_then_descends_its_objective_on_r():
    """One epoch with a max-step: θ½ = θ + η ∇KL_U(θ); θ₁ = θ½ − η (γ ∇ℓ_R + α ∇KL_R)(θ½), the
    teacher the model the plan was made from, the student moved away from it first."""
    model, edit, data = _setup()
    run = _cfg("scrub", max_steps=1, alpha=0.5, gamma=0.7, temperature=2.0, forget_batch=100)
    plan = METHODS["scrub"].unlearn(run, model, edit, data)
    teacher = {k: v.detach().clone() for k, v in model.named_parameters()}
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.3 * torch.randn(p.shape, generator=torch.Generator().manual_seed(1)))
    start = {k: v.detach().clone() for k, v in model.named_parameters()}

    def logits_at(params, x):
        return x.flatten(1) @ params["1.weight"].T + params["1.bias"]

    def grad(fn, params):
        leaves = {k: v.clone().requires_grad_(True) for k, v in params.items()}
        return dict(zip(leaves, torch.autograd.grad(fn(leaves), list(leaves.values()))))

    u, r = edit.removed, edit.train_set.subset(edit.retained_index)
    kl_u = grad(lambda p: _kl_by_hand(logits_at(p, u.x), logits_at(teacher, u.x), 2.0), start)
    half = {k: start[k] + LR * kl_u[k] for k in start}
    g = grad(
        lambda p: (
            0.7 * F.cross_entropy(logits_at(p, r.x), r.y)
            + 0.5 * _kl_by_hand(logits_at(p, r.x), logits_at(teacher, r.x), 2.0)
        ),
        half,
    )
    unlearning.unlearn(
        run, model, edit, data, plan, metric_fn=lambda m, e: {"val_f1": 0.0, "val_acc": 0.0}, score=lambda m: 0
    )
    for k, p in model.named_parameters():
        torch.testing.assert_close(p.detach(), half[k] - LR * g[k])
    assert unlearning.examples(run, plan) == unlearning.forwards(run, plan) == len(r) + edit.u


def test_scrub_leaves_the_teacher_alone_and_its_max_step_is_still_at_the_teacher():
    """At the teacher the divergence and its gradient vanish: the first epoch is γ ∇ℓ_R alone."""
    before, after, model, edit, _ = _step("scrub", max_steps=1, alpha=0.5, gamma=0.7, temperature=4.0)
    r = edit.retained_index
    g = _grad(model, lambda m: F.cross_entropy(m(edit.train_set.x[r]), edit.train_set.y[r]))
    _assert_step(before, after, {k: 0.7 * g[k] for k in g})


def test_an_unlearner_runs_in_the_harness_and_records_its_cost(make_cfg):
    row = runner.run(make_cfg("method=salun", "method.epochs=2"))
    assert row["status"] == "ok" and row["steps"] == 2 and row["stop_reason"] == "epochs"
    assert row["edit_epochs"] == 2 and row["edit_examples"] == 2 * row["n_train"]  # R ∪ U relabelled
    assert row["edit_seconds"] > 0 and "saliency" in row["unlearn_form"]
    assert 0 < row["n_selected"] < row["n_params"] and len(row["trajectory"]) == 2


def test_the_cpu_profile_scales_the_recipes_to_the_same_share_of_training():
    def unlearner(*overrides):
        run = config.run_settings(sweeps.compose(list(overrides)))
        return unlearning.epochs(run), unlearning.recipe(run)

    assert unlearner("method=finetune")[0] == 10  # the paper profile: as published
    published = "recipe=published"  # profile=cpu defaults to the tuned recipes, at their own epochs
    epochs, recipe = unlearner("method=finetune", "profile=cpu", published)  # digits, 15 epochs: 10·15/182
    assert epochs == 1 and recipe.epochs == 1 and recipe.lr == pytest.approx(0.1 * 0.05)
    assert recipe.schedule == "constant"
    assert (
        unlearner("method=grad_ascent", "experiment=table2", "profile=cpu", "seed=0", published)[0] == 1
    )  # ⌈5·25/182⌉
    assert unlearner("method=salun", "experiment=table2", "profile=cpu", "seed=0", published)[0] == 2  # ⌈10·25/182⌉


def test_the_cpu_profile_gives_arnoldi_100_steps_and_no_other_method_its_key(make_cfg):
    from gif_bench import sweeps
    from gif_bench.config import canonicalize

    arnoldi = canonicalize(sweeps.compose(["experiment=table1", "profile=cpu", "method=arnoldi", "seed=0"]))
    assert arnoldi.method.iterations == 100 and arnoldi.method.rank == 50  # the CG budget the profile ran before
    assert sweeps.compose(["method=arnoldi"]).method.iterations == 200  # the paper profile: captum's
    gif = canonicalize(sweeps.compose(["experiment=table1", "profile=cpu", "method=gif", "seed=0"]))
    assert "iterations" not in gif.method
