"""The influence core against closed forms computed from explicit Hessians."""

import pytest
import torch
from torch import nn

from gif_bench import influence
from gif_bench.influence import tree


def _problem(seed: int, ridge: float):
    """A tanh network with a squared loss (+ ridge·‖θ‖²/2), in float64."""
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2)).double()
    x = torch.randn(30, 3, dtype=torch.double)
    y = torch.randn(30, 2, dtype=torch.double)
    params = {k: v.detach() for k, v in model.named_parameters()}

    def loss(p):
        out = torch.func.functional_call(model, p, (x,))
        return ((out - y) ** 2).mean() + 0.5 * ridge * sum((t**2).sum() for t in p.values())

    grad = {k: torch.randn_like(v) for k, v in params.items()}
    gen = torch.Generator().manual_seed(seed + 1)
    mask = {k: torch.rand(v.shape, generator=gen) < 0.5 for k, v in params.items()}
    return loss, params, grad, mask


def _closed_form_gif(loss, params, grad, mask):
    h = influence.hessian_matrix(loss, params)
    cols = tree.flatten(mask).nonzero().squeeze(1)
    h_j = h[:, cols]
    x_j = torch.linalg.solve(h_j.T @ h_j, h_j.T @ tree.flatten(grad))
    return h, cols, x_j


def _rel(a, b):
    return float(torch.linalg.vector_norm(a - b) / torch.linalg.vector_norm(b))


@pytest.mark.parametrize("mode", ["linearize", "reverse", "forward"])
def test_hvp_matches_explicit_hessian_in_every_mode(mode):
    loss, params, grad, _ = _problem(0, 0.0)
    h = influence.hessian_matrix(loss, params)
    hvp = influence.hvp_fn(loss, params, mode=mode)
    for _ in range(2):  # products never depend on the ones before
        assert _rel(tree.flatten(hvp(grad)), h @ tree.flatten(grad)) < 1e-10
    with pytest.raises(ValueError, match="mode='lazy' is not one of linearize, reverse, forward"):
        influence.hvp_fn(loss, params, mode="lazy")


def _classifier(hidden: int):
    """Cross-entropy on a tanh network (hidden > 0) or on softmax regression (hidden = 0)."""
    torch.manual_seed(3)
    layers = [nn.Linear(3, hidden), nn.Tanh(), nn.Linear(hidden, 4)] if hidden else [nn.Linear(3, 4)]
    model = nn.Sequential(*layers).double()
    x, y = torch.randn(12, 3, dtype=torch.double), torch.randint(0, 4, (12,))
    params = {k: v.detach() for k, v in model.named_parameters()}

    def logits(p):
        return torch.func.functional_call(model, p, (x,))

    return logits, x, y, params


def test_ggn_is_the_gauss_newton_matrix_and_the_hessian_of_a_linear_model():
    logits, x, y, params = _classifier(hidden=5)
    v = {k: torch.randn_like(t) for k, t in params.items()}

    def ce(z):
        return torch.nn.functional.cross_entropy(z, y, reduction="sum")

    flat = tree.flatten(params)
    jac = torch.func.jacrev(lambda w: logits(tree.unflatten(w, params)))(flat).reshape(-1, flat.numel())
    z = logits(params).detach()
    hz = torch.func.hessian(lambda t: ce(t.reshape(z.shape)))(z.reshape(-1))
    ggn = influence.ggn_fn(logits, ce, params)
    assert _rel(tree.flatten(ggn(v)), jac.T @ hz @ jac @ tree.flatten(v)) < 1e-10
    full = influence.hessian_matrix(lambda p: ce(logits(p)), params)
    assert _rel(tree.flatten(ggn(v)), full @ tree.flatten(v)) > 1e-3  # the network's own curvature is left out

    logits, x, y, params = _classifier(hidden=0)  # linear logits: ∇²f = 0, G = H
    v = {k: torch.randn_like(t) for k, t in reversed(params.items())}  # key order does not matter
    full = influence.hessian_matrix(lambda p: torch.nn.functional.cross_entropy(logits(p), y, reduction="sum"), params)
    ggn = influence.ggn_fn(logits, lambda t: torch.nn.functional.cross_entropy(t, y, reduction="sum"), params)
    assert _rel(tree.flatten(ggn(v)), full @ tree.flatten({k: v[k] for k in params})) < 1e-10


def test_the_gauss_newton_curvature_of_a_relabelling_is_zero_and_its_hessian_is_not():
    logits, x, y, params = _classifier(hidden=5)
    y_new = (y + 1) % 4
    v = {k: torch.randn_like(t) for k, t in params.items()}

    def change(z):  # Σ_U [ℓ(z) − ℓ(z')]
        ce = torch.nn.functional.cross_entropy
        return ce(z, y, reduction="sum") - ce(z, y_new, reduction="sum")

    assert tree.norm(influence.ggn_fn(logits, change, params)(v)) < 1e-12
    exact = influence.hessian_matrix(lambda p: change(logits(p)), params) @ tree.flatten(v)
    assert float(torch.linalg.vector_norm(exact)) > 1e-2


@pytest.mark.parametrize("solver", ["lissa", "cg", "exact"])
def test_gif_matches_closed_form_random_mask(solver):
    loss, params, grad, mask = _problem(0, ridge=1.0)  # H positive definite, well conditioned
    _, cols, x_j = _closed_form_gif(loss, params, grad, mask)
    options = {"lissa": dict(scale="auto", tol=1e-10, max_iter=20000), "cg": dict(tol=1e-12, max_iter=500)}
    delta, info = influence.solve(
        "gif", loss, params, grad, mask=mask, solver=solver, return_info=True, **options.get(solver, {})
    )
    flat = tree.flatten(delta)
    assert _rel(flat[cols], x_j) < 1e-4
    outside = ~tree.flatten(mask)
    assert torch.equal(flat[outside], torch.zeros_like(flat[outside]))  # exactly zero off J
    assert info.residual < 1e-6


@pytest.mark.parametrize("solver", ["lissa", "cg", "lsqr"])
def test_gif_on_an_indefinite_hessian(solver):
    loss, params, grad, mask = _problem(0, ridge=0.0)
    h, cols, x_j = _closed_form_gif(loss, params, grad, mask)
    eig = torch.linalg.eigvalsh(h)
    assert eig.min() < -1e-2 and eig.max() > 1e-2  # genuinely indefinite
    options = {
        "lissa": dict(scale="auto", tol=1e-11, max_iter=50000),
        "cg": dict(tol=1e-12, max_iter=2000),
        "lsqr": dict(tol=1e-12, max_iter=2000),
    }
    delta = influence.solve("gif", loss, params, grad, mask=mask, solver=solver, **options[solver])
    assert _rel(tree.flatten(delta)[cols], x_j) < 1e-4


@pytest.mark.parametrize(
    ("growth", "start", "mu", "final_scale"),
    [
        ("multiply", 0.05, 2.0, lambda r: 0.05 * 2.0**r),  # the paper's Alg. 1: loss divided by μ
        ("add", 0.01, 0.3, lambda r: 0.01 + 0.3 * r),  # the research code: M += μ
    ],
)
def test_lissa_restarts_on_divergence_and_still_converges(growth, start, mu, final_scale):
    loss, params, grad, mask = _problem(0, ridge=1.0)
    _, cols, x_j = _closed_form_gif(loss, params, grad, mask)
    # A tiny M makes c = 1/M² ≫ 2/λ_max: the series must blow up and be restarted.
    delta, info = influence.solve(
        "gif", loss, params, grad, mask=mask, solver="lissa", return_info=True,
        scale=start, mu=mu, growth=growth, tol=1e-10, max_iter=20000,
    )  # fmt: skip
    assert info.restarts >= 1
    assert info.scale == pytest.approx(final_scale(info.restarts))
    assert _rel(tree.flatten(delta)[cols], x_j) < 1e-4


def test_lissa_gives_up_after_max_restarts():
    loss, params, grad, mask = _problem(0, ridge=1.0)
    with pytest.raises(influence.SolverDiverged):
        influence.solve("gif", loss, params, grad, mask=mask, scale=1e-3, mu=1.1, max_restarts=2, max_iter=100)


def test_truncated_lissa_is_the_truncated_neumann_series():
    """tol=0 runs exactly max_iter steps: x_K = c Σ_{k<K} (I − cA)^k b, A = H_JᵀH_J."""
    loss, params, grad, mask = _problem(1, ridge=0.5)
    h = influence.hessian_matrix(loss, params)
    p = torch.diag(tree.flatten(mask).double())
    a = p @ h @ h @ p
    b = p @ h @ tree.flatten(grad)
    m, steps = 3.0, 7
    c = m**-2
    expected = sum(c * torch.linalg.matrix_power(torch.eye(len(b), dtype=b.dtype) - c * a, k) @ b for k in range(steps))
    delta, info = influence.solve(
        "gif", loss, params, grad, mask=mask, solver="lissa", return_info=True, scale=m, tol=0.0, max_iter=steps
    )
    assert info.iterations == steps and info.restarts == 0
    assert info.hvps == 1 + 2 * steps
    assert _rel(tree.flatten(delta), expected) < 1e-10


def test_top_eigenvalue_by_power_iteration():
    a = torch.diag(torch.tensor([5.0, 2.0, 1.0, 0.5], dtype=torch.double))
    lam = influence.top_eigenvalue(lambda v: {"x": a @ v["x"]}, {"x": torch.zeros(4, dtype=torch.double)}, 100)
    assert lam == pytest.approx(5.0, rel=1e-6)


def test_unknown_method_and_solver_are_refused():
    loss, params, grad, mask = _problem(0, ridge=1.0)
    with pytest.raises(ValueError, match="method='nope'"):
        influence.solve("nope", loss, params, grad)
    with pytest.raises(ValueError, match="solver='nope'"):
        influence.solve("gif", loss, params, grad, solver="nope")


def test_key_order_of_grad_and_mask_does_not_matter():
    loss, params, grad, mask = _problem(0, ridge=1.0)
    reordered_grad = dict(reversed(list(grad.items())))
    reordered_mask = dict(reversed(list(mask.items())))
    for solver, options in (("exact", {}), ("cg", dict(tol=1e-12, max_iter=500))):
        a = influence.solve("gif", loss, params, grad, mask=mask, solver=solver, **options)
        b = influence.solve("gif", loss, params, reordered_grad, mask=reordered_mask, solver=solver, **options)
        assert list(b) == list(params)
        assert _rel(tree.flatten(b), tree.flatten(a)) < 1e-10


def _closed_forms(loss, params, grad, mask):
    h = influence.hessian_matrix(loss, params)
    g = tree.flatten(grad)
    j = tree.flatten(mask)
    cols = j.nonzero().squeeze(1)
    out = {}
    x = torch.zeros_like(g)
    x[cols] = torch.linalg.solve(h[:, cols].T @ h[:, cols], h[:, cols].T @ g)
    out["gif"] = x
    x = torch.zeros_like(g)
    x[cols] = torch.linalg.solve(h[cols][:, cols], g[cols])
    out["freezing"] = x
    full = torch.linalg.solve(h, g)
    out["projecting"] = torch.where(j, full, torch.zeros_like(full))
    out["koh"] = full
    return out


METHOD_OPTIONS = {
    "lissa": dict(scale="auto", tol=1e-10, max_iter=20000),
    "cg": dict(tol=1e-12, max_iter=2000),
    "cg+jacobi": dict(tol=1e-12, max_iter=2000, preconditioner="jacobi", probes=8),
    "lsqr": dict(tol=1e-12, max_iter=2000),
    "minres": dict(tol=1e-12, max_iter=2000),
    "cg+reorth": dict(tol=1e-12, max_iter=2000, reorthogonalize=True),
    "cg+jacobi+reorth": dict(tol=1e-12, max_iter=2000, preconditioner="jacobi", probes=8, reorthogonalize=True),
    "lsqr+reorth": dict(tol=1e-12, max_iter=2000, reorthogonalize=True),
    "minres+reorth": dict(tol=1e-12, max_iter=2000, reorthogonalize=True),
    "exact": {},
}


@pytest.mark.parametrize("method", ["gif", "freezing", "projecting", "koh"])
@pytest.mark.parametrize("solver", list(METHOD_OPTIONS))
def test_every_method_and_solver_matches_its_formula(method, solver):
    loss, params, grad, mask = _problem(2, ridge=1.0)
    expected = _closed_forms(loss, params, grad, mask)[method]
    options = dict(METHOD_OPTIONS[solver])
    solver = solver.split("+")[0]
    if solver == "minres" and method == "gif":  # K = H P_J is not symmetric
        with pytest.raises(ValueError, match="symmetric"):
            influence.solve(method, loss, params, grad, mask=mask, solver=solver, **options)
        return
    if method == "koh" and solver == "lissa":  # classic LiSSA: damping 0 gives H⁻¹ g exactly
        options = dict(damping=0.0, scale="auto", tol=1e-13, max_iter=20000)
    delta, info = influence.solve(method, loss, params, grad, mask=mask, solver=solver, return_info=True, **options)
    got = tree.flatten(delta)
    assert _rel(got, expected) < 1e-4, info
    if method != "koh":
        outside = ~tree.flatten(mask)
        assert torch.equal(got[outside], torch.zeros_like(got[outside]))


def test_classic_lissa_with_damping_is_the_damped_inverse():
    loss, params, grad, _ = _problem(2, ridge=1.0)
    h = influence.hessian_matrix(loss, params)
    lam, s = 0.05, 10.0
    expected = torch.linalg.solve(h + lam * s * torch.eye(len(h), dtype=h.dtype), tree.flatten(grad))
    delta, info = influence.solve(
        "koh", loss, params, grad, solver="lissa", return_info=True, damping=lam, scale=s, tol=1e-13, max_iter=20000
    )
    assert info.converged and _rel(tree.flatten(delta), expected) < 1e-6


@pytest.mark.parametrize("solver", ["cg", "lsqr", "exact"])
def test_a_linear_method_of_ones_own_runs_through_solve_linear(solver):
    """A method is data: damped Newton on J only, K = P_J (H + λI) P_J restricted to J, r = P_J g,
    written as a LinearMethod from the products, against its closed form."""
    loss, params, grad, mask = _problem(5, 0.5)
    lam = 0.3
    damped_block = influence.LinearMethod(
        system=lambda k, g: (
            (lambda v: tree.add(k.block(v), tree.scale(k.p(v), lam))),
            (lambda u: tree.add(k.block(u), tree.scale(k.p(u), lam))),
            k.p(g),
        ),
        dense=lambda h, g, cols: (h[cols][:, cols] + lam * torch.eye(len(cols), dtype=h.dtype), g[cols]),
        place=lambda sol, cols, g: torch.zeros_like(g).index_put_((cols,), sol),
    )
    delta, info = influence.solve_linear(damped_block, loss, params, grad, mask=mask, solver=solver, tol=1e-12)
    h = influence.hessian_matrix(loss, params)
    cols = tree.flatten(mask).nonzero().squeeze(1)
    expect = torch.zeros_like(tree.flatten(grad))
    expect[cols] = torch.linalg.solve(
        h[cols][:, cols] + lam * torch.eye(len(cols), dtype=h.dtype), tree.flatten(grad)[cols]
    )
    assert _rel(tree.flatten(delta), expect) < 1e-8 and info.converged


def test_solve_reaches_second_order_through_the_same_mapping():
    loss, params, grad, _ = _problem(6, 0.5)
    removed_loss = lambda p: 3.0 * loss(p)  # noqa: E731
    direct, _ = influence.second_order(loss, removed_loss, params, grad, m=50, u=5, solver="exact", return_info=True)
    mapped = influence.solve("second_order", loss, params, grad, removed_loss=removed_loss, m=50, u=5, solver="exact")
    assert list(influence.METHODS) == ["gif", "freezing", "projecting", "koh", "second_order"]
    assert _rel(tree.flatten(mapped), tree.flatten(direct)) == 0.0


def test_a_solver_carries_its_options():
    loss, params, grad, mask = _problem(7, 0.5)
    cg = influence.SOLVERS["cg"].bind(tol=1e-12, max_iter=500)
    by_object, info = influence.solve_linear("gif", loss, params, grad, mask=mask, solver=cg)
    by_name, _ = influence.solve_linear("gif", loss, params, grad, mask=mask, solver="cg", tol=1e-12, max_iter=500)
    assert cg.options == {"tol": 1e-12, "max_iter": 500} and info.solver == "cg" and info.converged
    assert _rel(tree.flatten(by_object), tree.flatten(by_name)) == 0.0
    capped, capped_info = influence.solve_linear("gif", loss, params, grad, mask=mask, solver=cg, max_iter=2)
    assert capped_info.iterations == 2 and not capped_info.converged  # options given at the call win


def _spd_and_indefinite(n: int, seed: int, decades: float = 4.0):
    """An SPD matrix with eigenvalues spread over ``decades``, the same with every third
    eigenvalue negated, and a right-hand side."""
    gen = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(n, n, generator=gen, dtype=torch.double))
    spectrum = torch.logspace(-decades / 2, decades / 2, n, dtype=torch.double)
    spd = q @ torch.diag(spectrum) @ q.T
    signs = torch.where(torch.arange(n) % 3 == 0, -1.0, 1.0).double()
    indefinite = q @ torch.diag(spectrum * signs) @ q.T
    return spd, indefinite, torch.randn(n, generator=gen, dtype=torch.double)


def _as_tree(matrix):
    return lambda v: {"x": matrix @ v["x"]}


def test_minres_solves_symmetric_systems_definite_or_not_with_one_product_per_iteration():
    spd, indefinite, b = _spd_and_indefinite(40, 0)
    for a in (spd, indefinite):
        x, info = influence.solvers.minres(_as_tree(a), {"x": b}, tol=1e-9, max_iter=200)
        assert _rel(x["x"], torch.linalg.solve(a, b)) < 1e-6
        assert info.converged and info.hvps == info.iterations + 2  # one per iteration, two to check
    # singular and consistent: the minimum-norm solution (the Krylov space lies in range(A))
    q, _ = torch.linalg.qr(torch.randn(30, 30, generator=torch.Generator().manual_seed(1), dtype=torch.double))
    singular = q[:, :20] @ torch.diag(torch.linspace(-3, 5, 20, dtype=torch.double)) @ q[:, :20].T
    b = singular @ torch.randn(30, dtype=torch.double)
    x, info = influence.solvers.minres(_as_tree(singular), {"x": b}, tol=1e-11, max_iter=200)
    assert _rel(x["x"], torch.linalg.pinv(singular) @ b) < 1e-8 and info.converged
    # singular and inconsistent: it stops on the normal-equation residual ‖A(b − Ax)‖ / ‖Ab‖
    b = torch.randn(30, generator=torch.Generator().manual_seed(2), dtype=torch.double)
    x, info = influence.solvers.minres(_as_tree(singular), {"x": b}, tol=1e-9, max_iter=200)
    normal = singular @ (b - singular @ x["x"])
    assert info.converged and info.residual <= 1e-9
    assert float(normal.norm() / (singular @ b).norm()) == pytest.approx(info.residual, rel=1e-6, abs=1e-14)


def test_minres_needs_fewer_products_than_cg_on_the_squared_system():
    _, indefinite, b = _spd_and_indefinite(200, 3, decades=2.0)
    _, by_minres = influence.solvers.minres(_as_tree(indefinite), {"x": b}, tol=1e-8, max_iter=1000)
    squared = indefinite @ indefinite
    _, by_cg = influence.solvers.cg(_as_tree(squared), {"x": indefinite @ b}, tol=1e-8, max_iter=1000)
    assert by_minres.converged and by_cg.converged
    # K_j(A², Ab) ⊂ K_2j(A, b), and both minimise ‖b − A x‖ over their space: never more products
    assert by_minres.hvps < by_cg.hvps


def test_jacobi_preconditioned_cg_is_cg_on_the_rescaled_system():
    spd, _, b = _spd_and_indefinite(30, 4)
    gen = torch.Generator().manual_seed(5)
    scales = torch.logspace(-3, 3, 30, dtype=torch.double)[torch.randperm(30, generator=gen)]
    a = torch.diag(scales) @ spd @ torch.diag(scales)  # badly scaled unknowns
    exact = torch.linalg.solve(a, b)
    plain_x, plain = influence.solvers.cg(_as_tree(a), {"x": b}, tol=1e-10, max_iter=3000, hvps_per_matvec=1)
    inv_diag = {"x": 1.0 / torch.diagonal(a)}
    x, info = influence.solvers.cg(
        _as_tree(a), {"x": b}, tol=1e-10, max_iter=3000, hvps_per_matvec=1, inverse_diagonal=inv_diag
    )
    assert _rel(x["x"], exact) < 1e-6
    # the residual reported is b − A x's, not the recurrence's (here round-off keeps it above tol)
    assert info.residual == pytest.approx(float((b - a @ x["x"]).norm() / b.norm()), rel=1e-9)
    assert info.iterations < plain.iterations / 3  # the scales no longer slow it down
    # zero entries of M⁻¹ pin their unknowns at 0
    pinned = {"x": torch.where(torch.arange(30) < 5, 0.0, 1.0 / torch.diagonal(a)).double()}
    x, _ = influence.solvers.cg(
        _as_tree(a), {"x": b}, tol=1e-10, max_iter=50, hvps_per_matvec=1, inverse_diagonal=pinned
    )
    assert torch.equal(x["x"][:5], torch.zeros(5, dtype=torch.double))


def test_the_jacobi_estimate_is_the_mean_of_squared_probes_and_unbiased():
    gen = torch.Generator().manual_seed(6)
    k = torch.randn(50, 8, generator=gen, dtype=torch.double)
    k[:, 3] = 0.0  # a column outside J
    op_t = lambda u: {"x": k.T @ u["x"]}  # noqa: E731
    inv = influence.solvers.jacobi_normal_diagonal(op_t, {"x": torch.zeros(50, dtype=torch.double)}, 4000, gen)
    column_norms = (k**2).sum(0)
    assert inv["x"][3] == 0.0
    keep = torch.arange(8) != 3
    assert torch.allclose(1.0 / inv["x"][keep], column_norms[keep], rtol=0.1)
    # by hand: four probes, their squared products averaged
    gen_a, gen_b = torch.Generator().manual_seed(7), torch.Generator().manual_seed(7)
    inv = influence.solvers.jacobi_normal_diagonal(op_t, {"x": torch.zeros(50, dtype=torch.double)}, 4, gen_a)
    probes = [(torch.randint(0, 2, (50,), generator=gen_b) * 2 - 1).double() for _ in range(4)]
    by_hand = sum((k.T @ z) ** 2 for z in probes) / 4
    assert torch.allclose(inv["x"][keep], 1.0 / by_hand[keep].clamp_min(1e-3 * by_hand[keep].mean()))
    with pytest.raises(ValueError, match="probes"):
        influence.solvers.jacobi_normal_diagonal(op_t, {"x": torch.zeros(50)}, 0, gen)


def _float32_spd(n: int, decades: float, seed: int):
    spd, _, b = _spd_and_indefinite(n, seed, decades)
    return spd.float(), b.float()


def test_reorthogonalized_krylov_solvers_keep_the_exact_arithmetic_bound_in_float32():
    """In exact arithmetic CG and LSQR finish in at most n iterations on an n-dimensional system;
    in float32 on an ill-conditioned one the plain recurrences lose orthogonality and need
    several times that. Re-orthogonalized, they are back under n."""
    n = 100
    a, b = _float32_spd(n, 3.0, 0)
    plain_x, plain = influence.solvers.cg(_as_tree(a), {"x": b}, tol=1e-4, max_iter=3000, hvps_per_matvec=1)
    x, info = influence.solvers.cg(
        _as_tree(a), {"x": b}, tol=1e-4, max_iter=3000, hvps_per_matvec=1, reorthogonalize=True
    )
    assert plain.iterations > n and plain.residual < 2e-4
    assert info.iterations <= n and info.solver == "cg+reorth"
    # the residual reported is the true one (the recurrence's stopped it below 1e-4; round-off lifts it a little)
    assert info.residual == pytest.approx(float((b - a @ x["x"]).norm() / b.norm()), rel=1e-4) and info.residual < 2e-4
    tall = torch.cat([a, a[: n // 2]])  # full column rank, 150 × 100
    r = torch.randn(len(tall), generator=torch.Generator().manual_seed(1))
    ops = (_as_tree(tall), lambda u: {"x": tall.T @ u["x"]}, {"x": r})
    _, plain = influence.solvers.lsqr(*ops, tol=1e-4, max_iter=3000)
    x, info = influence.solvers.lsqr(*ops, tol=1e-4, max_iter=3000, reorthogonalize=True)
    assert plain.iterations > n and info.iterations <= n and info.residual < 2e-4
    assert x["x"].shape == (n,)  # x has K's column shape, not r's
    normal = tall.T @ (r - tall @ x["x"])
    assert float(normal.norm() / (tall.T @ r).norm()) < 2e-4
    _, plain = influence.solvers.minres(_as_tree(a), {"x": b}, tol=1e-3, max_iter=3000)
    _, info = influence.solvers.minres(_as_tree(a), {"x": b}, tol=1e-3, max_iter=3000, reorthogonalize=True)
    assert plain.converged and info.converged and info.iterations < plain.iterations


def test_a_krylov_basis_removes_its_components_and_stores_only_the_support():
    gen = torch.Generator().manual_seed(8)
    like = {"w": torch.zeros(4, 5, dtype=torch.double), "b": torch.zeros(3, dtype=torch.double)}
    support = {"w": torch.rand(4, 5, generator=gen) < 0.5, "b": torch.tensor([True, False, True])}

    def on_support():
        return {k: torch.randn(t.shape, generator=gen, dtype=torch.double) * support[k] for k, t in like.items()}

    basis = influence.basis.KrylovBasis(like, support)
    stored = []
    for _ in range(4):  # orthonormal vectors by Gram–Schmidt through the basis itself
        v = basis.orthogonalize(on_support())
        v = tree.scale(v, 1.0 / tree.norm(v))
        basis.add(v)
        stored.append(v)
    assert basis.dim == tree.count(support) < 23  # packed: J's entries only
    w = on_support()
    w["w"][~support["w"]] = 7.0  # entries off the support are not the basis's business
    out = basis.orthogonalize(w)
    assert all(abs(float(tree.dot(q, out))) < 1e-12 for q in stored)
    assert torch.equal(out["w"][~support["w"]], w["w"][~support["w"]])
    expected = tree.add(w, {k: sum(float(tree.dot(q, w)) * q[k] for q in stored) for k in w}, -1.0)
    assert all(torch.allclose(out[k], expected[k]) for k in w)
    # pairs: ⟨b_i, a_j⟩ = δ_ij (a_i = M b_i) make the result M⁻¹-orthogonal, here M = diag(d)
    d = {k: torch.rand(t.shape, generator=gen, dtype=torch.double) + 0.5 for k, t in like.items()}
    pairs = influence.basis.KrylovBasis(like)
    kept = []
    for _ in range(3):
        r = pairs.orthogonalize(on_support())
        z = {k: r[k] / d[k] for k in r}
        s = float(tree.dot(r, z)) ** 0.5
        pairs.add(tree.scale(r, 1 / s), tree.scale(z, 1 / s))
        kept.append(z)
    out = pairs.orthogonalize(on_support())
    assert all(abs(float(tree.dot(z, out))) < 1e-12 for z in kept)
    with pytest.raises(ValueError, match="pairs"):
        pairs.add(out)


def test_preconditioned_cg_reorthogonalizes_in_the_preconditioners_inner_product():
    """Jacobi-preconditioned CG in float32 on a badly scaled system: as written it needs more than
    n iterations, with its residuals kept M⁻¹-orthogonal it stays within n."""
    spd, _, b = _spd_and_indefinite(100, 0, 3.0)
    scales = torch.logspace(-1, 1, 100, dtype=torch.double)[
        torch.randperm(100, generator=torch.Generator().manual_seed(5))
    ]
    a, b = (torch.diag(scales) @ spd @ torch.diag(scales)).float(), b.float()
    options = dict(tol=1e-4, max_iter=3000, hvps_per_matvec=1, inverse_diagonal={"x": 1.0 / torch.diagonal(a)})
    _, plain = influence.solvers.cg(_as_tree(a), {"x": b}, **options)
    x, info = influence.solvers.cg(_as_tree(a), {"x": b}, reorthogonalize=True, **options)
    assert plain.iterations > 100 and info.iterations <= 100 and info.solver == "cg+reorth"
    assert info.residual < 5e-4 and _rel(x["x"].double(), torch.linalg.solve(a.double(), b.double())) < 0.05


def test_a_float32_basis_orthogonalizes_a_vector_far_larger_than_its_remainder():
    """Two full passes ("twice is enough"): a vector 7,000× longer than what is left of it keeps
    no component along the basis above float32's unit round-off; one pass, or a second pass
    whose correction is subtracted from the original vector, leaves ~1e-4 of it."""
    gen = torch.Generator().manual_seed(3)
    q, _ = torch.linalg.qr(torch.randn(400, 50, generator=gen))
    basis = influence.KrylovBasis({"x": torch.zeros(400)})
    for j in range(50):
        basis.add({"x": q[:, j].contiguous()})
    small = torch.randn(400, generator=gen)
    small = small - q @ (q.T @ small)
    small = small / small.norm()
    v = q @ (1e3 * torch.randn(50, generator=gen)) + small
    out = basis.orthogonalize({"x": v})["x"]
    assert float(v.norm() / out.norm()) > 1e3
    assert float((q.T @ out).abs().max() / out.norm()) < 1e-6
    assert torch.allclose(out, small, atol=1e-3)
    assert len(basis) == 50 and basis.dim == 400
