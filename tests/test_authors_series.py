"""The series the paper's tables were computed with, written out with explicit matrices, and
Tikhonov damping of every linear method against its closed form."""

import math

import pytest
import torch
from torch import nn

from gif_bench import influence
from gif_bench.influence import tree


def _network(loss_scale: float):
    """Cross-entropy on a float64 Linear–Tanh–Linear classifier (its loss multiplied by
    ``loss_scale``: a large one makes the authors' first divisor M = 1 diverge)."""
    torch.manual_seed(5)
    model = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 3)).double()
    x, y = torch.randn(16, 3, dtype=torch.double), torch.randint(0, 3, (16,))
    params = {k: v.detach() for k, v in model.named_parameters()}

    def loss(p):
        return loss_scale * nn.functional.cross_entropy(torch.func.functional_call(model, p, (x,)), y)

    grad = {k: 0.1 * torch.randn_like(v) for k, v in params.items()}
    gen = torch.Generator().manual_seed(7)
    mask = {k: torch.rand(v.shape, generator=gen) < 0.5 for k, v in params.items()}
    return model, loss, params, grad, mask


def _authors_series(a: torch.Tensor, b: torch.Tensor, unknowns: int, *, step: float, n: int, tol: float = 1e-9):
    """The research code's loop, term for term: c = 1/M², I_0 = c b, I_{k+1} = c b + (I − c A) I_k;
    stop when ‖I_{k+1} − I_k‖ ≤ tol·√|J| or after n iterations; at even k, a step larger than
    the one two iterations before restarts everything with M ← M + step (M starts at 1)."""
    m, restarts, products = 1.0, 0, 0
    while True:
        c = 1.0 / m**2
        term, diff, diff_old, count, diverged = c * b, math.inf, 1e10, 0, False
        while diff > tol * unknowns**0.5 and count < n:
            new = c * b + term - c * (a @ term)
            products += 1
            diff = float(torch.linalg.vector_norm(new - term))
            if count % 2 == 0:
                if diff > diff_old:
                    diverged = True
                    break
                diff_old = diff
            term, count = new, count + 1
        if not diverged:
            return term, m, restarts, products
        m, restarts = m + step, restarts + 1


AUTHORS = dict(scale=1.0, growth="add", stop="difference", divergence="even_step", tol=1e-9, max_restarts=10_000)


def _explicit_systems(loss, params, grad, mask, conv_linear):
    """(A, b, P_out, |J|) of each of the paper's rows, from the explicit Hessian."""
    h = influence.hessian_matrix(loss, params)
    g = tree.flatten(grad)
    n = len(g)
    p_j = torch.diag(tree.flatten(mask).double())
    p_all = torch.eye(n, dtype=torch.double)
    p_if = torch.diag(tree.flatten(conv_linear).double())
    block = p_j @ h @ p_j
    return {
        "gif": (p_j @ h @ h @ p_j, p_j @ h @ g, p_j, tree.count(mask)),
        "freezing": (block @ block, block @ g, p_j, tree.count(mask)),
        "projecting": (p_all @ h @ h @ p_all, p_all @ h @ g, p_j, n),  # J = every parameter, then keep J
        "if": (p_if @ h @ h @ p_if, p_if @ h @ g, p_if, tree.count(conv_linear)),  # GIF over Conv/Linear
    }


@pytest.mark.parametrize(("loss_scale", "step", "n"), [(1.0, 7.0, 200), (40.0, 3.0, 30), (40.0, 5.0, 101)])
@pytest.mark.parametrize("row", ["gif", "freezing", "projecting", "if"])
def test_the_authors_series_term_for_term(row, loss_scale, step, n):
    model, loss, params, grad, mask = _network(loss_scale)
    conv_linear = influence.select("all", model, ratio=1.0)
    a, b, keep, unknowns = _explicit_systems(loss, params, grad, mask, conv_linear)[row]
    expected, m, restarts, products = _authors_series(a, b, unknowns, step=step, n=n)
    expected = keep @ expected
    if loss_scale > 1.0:
        assert restarts >= 1  # the case with restarts
    method, used = {"gif": ("gif", mask), "freezing": ("freezing", mask), "projecting": ("projecting", mask)}.get(
        row, ("gif", conv_linear)
    )
    for model_arg in (None, model) if method in ("gif", "freezing") else (None,):  # restricted products too
        delta, info = influence.solve(
            method, loss, params, grad, mask=used, solver="lissa", model=model_arg, return_info=True,
            mu=step, max_iter=n, **AUTHORS,
        )  # fmt: skip
        got = tree.flatten(delta)
        assert float(torch.linalg.vector_norm(got - expected)) <= 1e-12 * float(torch.linalg.vector_norm(expected))
        assert info.restarts == restarts and info.scale == m
        assert info.iterations == n  # every one of these runs hits max_iter, as every logged run did
        # H P_J g, two HVPs per product of A (failed runs included), two for the reported residual
        assert info.hvps == 1 + 2 * products + 2


def test_n_iterations_are_n_plus_one_terms_and_one_fewer_is_a_different_answer():
    _, loss, params, grad, mask = _network(1.0)
    full = influence.solve("gif", loss, params, grad, mask=mask, solver="lissa", mu=7.0, max_iter=30, **AUTHORS)
    short = influence.solve("gif", loss, params, grad, mask=mask, solver="lissa", mu=7.0, max_iter=29, **AUTHORS)
    gap = float(tree.norm(tree.add(full, short, -1.0)) / tree.norm(full))
    assert gap > 1e-6  # the last term matters: one term short is not the authors' answer
    by_residual = influence.solve(
        "gif", loss, params, grad, mask=mask, solver="lissa", scale=1.0, tol=0.0, max_iter=31
    )  # the residual rule's N + 1 products return the same N + 1 terms
    assert float(tree.norm(tree.add(full, by_residual, -1.0)) / tree.norm(full)) < 1e-12


def test_the_step_rule_stops_a_converged_series():
    _, loss, params, grad, mask = _network(1.0)
    delta, info = influence.solve(
        "gif", loss, params, grad, mask=mask, solver="lissa", return_info=True,
        **{**AUTHORS, "tol": 1e-3}, mu=7.0, max_iter=100_000,
    )  # fmt: skip
    assert info.iterations < 100_000 and info.converged


def _damped_closed_forms(loss, params, grad, mask, lam):
    h = influence.hessian_matrix(loss, params)
    g = tree.flatten(grad)
    j = tree.flatten(mask)
    cols = j.nonzero().squeeze(1)

    def ridge(k, r):
        return torch.linalg.solve(k.T @ k + lam * torch.eye(k.shape[1], dtype=k.dtype), k.T @ r)

    out = {name: torch.zeros_like(g) for name in ("gif", "freezing", "projecting")}
    out["gif"][cols] = ridge(h[:, cols], g)
    out["freezing"][cols] = ridge(h[cols][:, cols], g[cols])
    full = ridge(h, g)
    out["projecting"][cols] = full[cols]
    out["koh"] = full
    return out


DAMPED_SOLVERS = {
    "lissa": dict(scale="auto", tol=1e-12, max_iter=50_000),
    "cg": dict(tol=1e-12, max_iter=2000),
    "lsqr": dict(tol=1e-12, max_iter=2000),
    "exact": {},
}


# koh with solver=lissa runs Koh & Liang's classic LiSSA, whose own damping gives (H + λsI)⁻¹ g
# (tests/test_influence.py); the normal equations' damping reaches koh through the other solvers.
# The series' damping is the same code for every method, so one method checks it.
DAMPED_CASES = [(m, s) for m in ("gif", "freezing", "projecting", "koh") for s in DAMPED_SOLVERS if s != "lissa"]
DAMPED_CASES.append(("gif", "lissa"))


@pytest.mark.parametrize(("method", "solver"), DAMPED_CASES)
def test_damping_gives_the_tikhonov_solution_of_every_method(method, solver):
    """(KᵀK + λI)⁻¹ Kᵀ r for each method's K and r, here on an indefinite H (no ridge in the loss)."""
    _, loss, params, grad, mask = _network(1.0)
    lam = 1e-3
    expected = _damped_closed_forms(loss, params, grad, mask, lam)[method]
    options = dict(DAMPED_SOLVERS[solver], damping=lam)
    delta, info = influence.solve(method, loss, params, grad, mask=mask, solver=solver, return_info=True, **options)
    got = tree.flatten(delta)
    assert float(torch.linalg.vector_norm(got - expected) / torch.linalg.vector_norm(expected)) < 1e-7, info
    undamped = influence.solve(method, loss, params, grad, mask=mask, solver="exact")
    assert float(tree.norm(tree.add(undamped, delta, -1.0))) > 1e-3 * float(tree.norm(delta))  # λ matters here


def test_minres_refuses_damping():
    _, loss, params, grad, mask = _network(1.0)
    with pytest.raises(ValueError, match="no damping"):
        influence.solve("freezing", loss, params, grad, mask=mask, solver="minres", damping=0.1)
