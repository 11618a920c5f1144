"""Influence predictions against exact refits of ridge regression (a quadratic: closed forms)."""

import pytest
import torch

from gif_bench import influence
from gif_bench.influence import tree

RIDGE = 0.1


def _ridge(m=60, d=6, seed=0):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(m, d, generator=gen, dtype=torch.double)
    y = x @ torch.randn(d, generator=gen, dtype=torch.double) + 0.3 * torch.randn(m, generator=gen, dtype=torch.double)
    return x, y


def _per_example(theta, x, y):
    """ℓ_i = ½(x_iᵀθ − y_i)² + ½λ‖θ‖² (the regulariser inside ℓ keeps every mean loss ridge)."""
    return 0.5 * (x @ theta - y) ** 2 + 0.5 * RIDGE * (theta**2).sum()


def _fit(x, y):
    d = x.shape[1]
    return torch.linalg.solve(x.T @ x / len(y) + RIDGE * torch.eye(d, dtype=x.dtype), x.T @ y / len(y))


def _setup(u):
    x, y = _ridge()
    m = len(y)
    theta = _fit(x, y)
    removed, kept = torch.arange(u), torch.arange(u, m)
    refit = _fit(x[kept], y[kept])
    params = {"theta": theta}

    def mean_loss(idx):
        return lambda p: _per_example(p["theta"], x[idx], y[idx]).mean()

    def sum_loss(idx):
        return lambda p: _per_example(p["theta"], x[idx], y[idx]).sum()

    g_sum = influence.gradient(sum_loss(removed), params)  # G = Σ_U ∇ℓ
    return dict(
        m=m,
        u=u,
        params=params,
        refit=refit,
        theta=theta,
        kept=kept,
        removed=removed,
        mean_loss=mean_loss,
        sum_loss=sum_loss,
        g_sum=g_sum,
    )


def _err(delta, s):
    return float(torch.linalg.vector_norm(s["theta"] + delta["theta"] - s["refit"]))


@pytest.mark.parametrize("solver", ["cg", "exact"])
def test_koh_with_the_retained_hessian_is_the_exact_refit(solver):
    s = _setup(u=15)
    grad = tree.scale(s["g_sum"], 1.0 / (s["m"] - s["u"]))  # g = (1/(m−u)) Σ_U ∇ℓ
    delta = influence.solve("koh", s["mean_loss"](s["kept"]), s["params"], grad, solver=solver, tol=1e-13)
    assert _err(delta, s) < 1e-8


def test_second_order_beats_first_order_for_a_large_group_and_signs_agree():
    s = _setup(u=20)  # a third of the data
    full = torch.arange(s["m"])
    true_change = s["refit"] - s["theta"]
    first = influence.solve(
        "koh", s["mean_loss"](full), s["params"], tree.scale(s["g_sum"], 1 / s["m"]), solver="exact"
    )
    second = influence.second_order(
        s["mean_loss"](full), s["sum_loss"](s["removed"]), s["params"], s["g_sum"], m=s["m"], u=s["u"], solver="exact"
    )
    for delta in (first, second):
        assert torch.nn.functional.cosine_similarity(delta["theta"], true_change, dim=0) > 0.9
    assert _err(second, s) < 0.7 * _err(first, s)


def test_second_order_solvers_agree():
    s = _setup(u=20)
    full = torch.arange(s["m"])
    args = (s["mean_loss"](full), s["sum_loss"](s["removed"]), s["params"], s["g_sum"])
    exact = influence.second_order(*args, m=s["m"], u=s["u"], solver="exact")
    cg, info = influence.second_order(*args, m=s["m"], u=s["u"], solver="cg", tol=1e-13, return_info=True)
    assert torch.allclose(cg["theta"], exact["theta"], rtol=1e-8, atol=1e-12)
    assert info.hvps > 0 and info.residual < 1e-10


def test_freezing_is_the_exact_optimum_over_j_with_the_rest_fixed():
    s = _setup(u=15)
    grad = tree.scale(s["g_sum"], 1.0 / (s["m"] - s["u"]))
    mask = {"theta": torch.tensor([True, False, True, True, False, False])}
    delta = influence.solve("freezing", s["mean_loss"](s["kept"]), s["params"], grad, mask=mask, solver="exact")
    # minimise the retained mean loss over θ_J with θ_{−J} held at θ̂: a small linear solve
    x, y = _ridge()
    xk, yk = x[s["kept"]], y[s["kept"]]
    j = mask["theta"]
    fixed = s["theta"].clone()
    a = xk[:, j].T @ xk[:, j] / len(yk) + RIDGE * torch.eye(int(j.sum()), dtype=x.dtype)
    b = xk[:, j].T @ (yk - xk[:, ~j] @ fixed[~j]) / len(yk)
    optimum = fixed.clone()
    optimum[j] = torch.linalg.solve(a, b)
    assert torch.allclose(s["theta"] + delta["theta"], optimum, atol=1e-10)
    assert torch.equal(delta["theta"][~j], torch.zeros(int((~j).sum()), dtype=x.dtype))


def test_a_relabelling_of_a_quadratic_is_refit_exactly_by_koh_and_second_order():
    x, y = _ridge()
    m, changed = len(y), torch.arange(15)
    y_new = y.clone()
    y_new[changed] += 2.0
    theta = _fit(x, y)
    refit = _fit(x, y_new)  # the model trained on the corrected targets
    params = {"theta": theta}

    def full(p):
        return _per_example(p["theta"], x, y).mean()

    def change(p):  # Σ_U [ℓ(z) − ℓ(z')]
        return (
            _per_example(p["theta"], x[changed], y[changed]) - _per_example(p["theta"], x[changed], y_new[changed])
        ).sum()

    g_sum = influence.gradient(change, params)
    koh = influence.solve("koh", full, params, tree.scale(g_sum, 1 / m), solver="exact")
    second = influence.second_order(full, change, params, g_sum, m=m, u=0, solver="exact")
    for delta in (koh, second):  # H does not depend on the targets: the expansion is exact
        assert torch.allclose(theta + delta["theta"], refit, atol=1e-10)


def test_second_order_refuses_a_total_group():
    s = _setup(u=5)
    with pytest.raises(ValueError, match="0 <= u < m"):
        influence.second_order(
            s["mean_loss"](s["kept"]), s["sum_loss"](s["removed"]), s["params"], s["g_sum"], m=5, u=5
        )


def test_second_order_with_gauss_newton_curvature():
    """Softmax regression: the logits are linear in θ, so H_U's Gauss–Newton part is all of it;
    a relabelling's Gauss–Newton H_U is zero, leaving Koh & Liang's (1/m) H⁻¹ G."""
    gen = torch.Generator().manual_seed(4)
    x = torch.randn(40, 3, generator=gen, dtype=torch.double)
    y = torch.randint(0, 3, (40,), generator=gen)
    w = {"w": 0.3 * torch.randn(3, 3, generator=gen, dtype=torch.double)}
    m, removed = len(y), torch.arange(10)
    ce = torch.nn.functional.cross_entropy

    def full(p):
        return ce(x @ p["w"], y) + 0.5 * RIDGE * (p["w"] ** 2).sum()

    def removed_logits(p):
        return x[removed] @ p["w"]

    def removed_ce(z):
        return ce(z, y[removed], reduction="sum")

    g_sum = influence.gradient(lambda p: removed_ce(removed_logits(p)), w)
    exact = influence.second_order(full, lambda p: removed_ce(removed_logits(p)), w, g_sum, m=m, u=10, solver="exact")
    ggn = influence.ggn_fn(removed_logits, removed_ce, w)
    gauss_newton = influence.second_order(full, None, w, g_sum, m=m, u=10, removed_hvp=ggn, solver="exact")
    assert torch.allclose(gauss_newton["w"], exact["w"], rtol=1e-10, atol=1e-12)

    y_new = (y[removed] + 1) % 3

    def change(z):
        return removed_ce(z) - ce(z, y_new, reduction="sum")

    g_change = influence.gradient(lambda p: change(removed_logits(p)), w)
    relabel = influence.second_order(
        full, None, w, g_change, m=m, u=0, removed_hvp=influence.ggn_fn(removed_logits, change, w), solver="exact"
    )
    koh = influence.solve("koh", full, w, tree.scale(g_change, 1 / m), solver="exact")
    assert torch.allclose(relabel["w"], koh["w"], rtol=1e-10, atol=1e-14)
    with pytest.raises(ValueError, match="exactly one of removed_loss and removed_hvp"):
        influence.second_order(full, change, w, g_change, m=m, u=0, removed_hvp=ggn)
