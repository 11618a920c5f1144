"""K-FAC, EK-FAC, Arnoldi and the curvature selector against explicit computations on tiny nets."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from gif_bench import influence
from gif_bench.influence import tree

N = 9


def _mlp() -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 3)).double().eval()
    x = torch.randn(N, 3, dtype=torch.float64)
    y = torch.randint(0, 3, (N,))
    return model, x, y


def _hand_factors(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> dict[str, tuple]:
    """Per Linear layer: its inputs a_n and the per-example output gradients b_n = ∂ℓ_n/∂s_n."""
    h = model[0](x)
    out = model[2](model[1](h))
    b0, b2 = torch.autograd.grad(F.cross_entropy(out, y, reduction="sum"), [h, out])
    return {"0": (x, b0.detach()), "2": (model[1](h).detach(), b2.detach())}


def test_kfac_factors_are_the_input_and_output_gradient_covariances():
    model, x, y = _mlp()
    op = influence.kfac_operator(model, [(x, y)], fisher_type="empirical")
    v = {k: torch.randn_like(p) for k, p in model.named_parameters()}
    names = list(influence.kfac_parameters(model))
    got = dict(zip(names, op @ [v[n] for n in names]))
    for layer, (a, b) in _hand_factors(model, x, y).items():
        big_a, big_b = a.T @ a / N, b.T @ b / N  # A = E[a aᵀ], B = E[b bᵀ]
        torch.testing.assert_close(got[f"{layer}.weight"], big_b @ v[f"{layer}.weight"] @ big_a)
        torch.testing.assert_close(got[f"{layer}.bias"], big_b @ v[f"{layer}.bias"])


def test_kfac_of_one_example_is_its_exact_empirical_fisher():
    model, x, y = _mlp()
    x, y = x[:1], y[:1]
    params = {k: p.detach() for k, p in model.named_parameters()}

    def loss(p):
        return F.cross_entropy(torch.func.functional_call(model, p, (x,)), y)

    g = tree.flatten(torch.func.grad(loss)(params))
    op = influence.kfac_operator(model, [(x, y)], fisher_type="empirical")
    v = torch.randn_like(g)
    # one example: ∇_W ℓ = b aᵀ, so vec(∇ℓ) vec(∇ℓ)ᵀ = (a aᵀ) ⊗ (b bᵀ) exactly, per weight and per
    # bias (curvlinops' K-FAC keeps them in separate blocks)
    got = tree.flatten(dict(zip(params, op @ list(tree.unflatten(v, params).values()))))
    for sl in (slice(0, 12), slice(12, 16), slice(16, 28), slice(28, 31)):
        torch.testing.assert_close(got[sl], g[sl] * (g[sl] @ v[sl]))


def test_ekfac_eigenvalues_are_the_projected_per_example_second_moments():
    model, x, y = _mlp()
    op = influence.kfac_operator(model, [(x, y)], eigen_corrected=True, fisher_type="empirical")
    v = {k: torch.randn_like(p) for k, p in model.named_parameters()}
    names = list(influence.kfac_parameters(model))
    got = dict(zip(names, op @ [v[n] for n in names]))
    for layer, (a, b) in _hand_factors(model, x, y).items():
        q_a = torch.linalg.eigh(a.T @ a / N).eigenvectors
        q_b = torch.linalg.eigh(b.T @ b / N).eigenvectors
        per_example = torch.einsum("ni,nj->nij", b, a)  # ∇_W ℓ_n = b_n a_nᵀ
        corrected = (q_b.T @ per_example @ q_a).pow(2).mean(0)  # E[(Q_Bᵀ ∇W Q_A)²]
        expected = q_b @ ((q_b.T @ v[f"{layer}.weight"] @ q_a) * corrected) @ q_a.T
        torch.testing.assert_close(got[f"{layer}.weight"], expected)
        bias_corrected = (b @ q_b).pow(2).mean(0)
        torch.testing.assert_close(got[f"{layer}.bias"], q_b @ ((q_b.T @ v[f"{layer}.bias"]) * bias_corrected))


@pytest.mark.parametrize("eigen_corrected", [False, True])
def test_kfac_solve_inverts_the_damped_operator(eigen_corrected):
    model, x, y = _mlp()
    model = nn.Sequential(*model, nn.BatchNorm1d(3).double().eval())  # not tracked: Δθ = 0 there
    grad = {k: torch.randn_like(p) for k, p in model.named_parameters()}
    delta, info = influence.kfac_solve(
        model, [(x, y)], grad, eigen_corrected=eigen_corrected, damping=0.05, fisher_type="empirical"
    )
    assert info.solver == ("ekfac" if eigen_corrected else "kfac") and info.scale == 0.05
    assert not delta["3.weight"].any() and not delta["3.bias"].any()
    op = influence.kfac_operator(model, [(x, y)], eigen_corrected=eigen_corrected, fisher_type="empirical")
    names = list(influence.kfac_parameters(model))
    back = op @ [delta[n] for n in names]
    for n, b in zip(names, back):  # (G + λI) Δθ = g
        torch.testing.assert_close(b + 0.05 * delta[n], grad[n])


def test_kfac_default_damping_is_a_tenth_of_the_mean_eigenvalue():
    model, x, y = _mlp()
    grad = {k: torch.randn_like(p) for k, p in model.named_parameters()}
    _, info = influence.kfac_solve(model, [(x, y)], grad, fisher_type="empirical")
    op = influence.kfac_operator(model, [(x, y)], fisher_type="empirical")
    dense = torch.stack(
        [
            torch.cat([t.flatten() for t in op @ list(tree.unflatten(e, grad).values())])
            for e in torch.eye(31, dtype=torch.float64)
        ]
    )
    assert info.scale == pytest.approx(0.1 * torch.linalg.eigvalsh((dense + dense.T) / 2).mean().item())


def _explicit(model, x, y):
    params = {k: p.detach() for k, p in model.named_parameters()}

    def loss(p):
        return F.cross_entropy(torch.func.functional_call(model, p, (x,)), y)

    return params, loss, influence.hessian_matrix(loss, params)


def test_arnoldi_finds_the_largest_eigenpairs_of_the_explicit_hessian():
    model, x, y = _mlp()
    params, loss, h = _explicit(model, x, y)
    values, vectors = torch.linalg.eigh(h)
    top = values.abs().argsort(descending=True)[:4]
    hvp = influence.hvp_fn(loss, params, mode="reverse")

    def matvec(v):
        return tree.flatten(hvp(tree.unflatten(v, params)))

    got_values, got_vectors = influence.top_eigenpairs(matvec, torch.randn(31, dtype=torch.float64), 4, 31)
    torch.testing.assert_close(got_values, values[top])
    torch.testing.assert_close((got_vectors.T @ vectors[:, top]).abs(), torch.eye(4, dtype=torch.float64))


def test_arnoldi_solve_is_the_newton_step_on_the_top_eigenspace():
    model, x, y = _mlp()
    params, loss, h = _explicit(model, x, y)
    g = torch.randn(31, dtype=torch.float64)
    values, vectors = torch.linalg.eigh(h)
    top = values.abs().argsort(descending=True)[:5]
    v, lam = vectors[:, top], values[top]
    expected = v @ ((v.T @ g) / lam)
    hvp = influence.hvp_fn(loss, params, mode="reverse")
    delta, info = influence.arnoldi_solve(hvp, params, tree.unflatten(g, params), rank=5, iterations=31)
    torch.testing.assert_close(tree.flatten(delta), expected)
    assert info.hvps == info.iterations + 1 and info.scale == pytest.approx(lam.abs().min().item())
    with pytest.raises(ValueError, match="rank"):
        influence.arnoldi_solve(hvp, params, tree.unflatten(g, params), rank=10, iterations=5)


def test_fisher_diagonal_is_the_mean_squared_per_example_gradient():
    model, x, y = _mlp()
    params = {k: p.detach() for k, p in model.named_parameters()}

    def one(p, xi, yi):
        return F.cross_entropy(torch.func.functional_call(model, p, (xi[None],)), yi[None])

    got = influence.fisher_diagonal(one, params, x, y, chunk=4)
    by_loop = [torch.func.grad(one)(params, x[i], y[i]) for i in range(N)]
    for k in params:
        torch.testing.assert_close(got[k], torch.stack([g[k] for g in by_loop]).pow(2).mean(0))


def test_curvature_selector_scores_units_by_gradient_squared_over_fisher():
    torch.manual_seed(0)
    probe = nn.Sequential(nn.Linear(5, 6), nn.ReLU(), nn.Linear(6, 2))
    grad = {k: torch.randn_like(p) for k, p in probe.named_parameters()}
    fisher = {k: torch.rand_like(p) + 0.1 for k, p in probe.named_parameters()}
    scores = influence.curvature_scores(probe, grad, fisher, damping=0.5)
    w, b = grad["0.weight"], grad["0.bias"]
    by_hand = (w**2 / (fisher["0.weight"] + 0.5)).sum(1) + b**2 / (fisher["0.bias"] + 0.5)
    torch.testing.assert_close(scores["0"], by_hand)
    # a budget of two whole units of layer 0 (6 params each) takes the two best-scored units
    mask = influence.select("curvature", probe, ratio=12 / 36, grad=grad, fisher=fisher)
    best = by_hand.argsort(descending=True)[:2]
    # the default damping differs from 0.5; recompute its order
    default = influence.curvature_scores(probe, grad, fisher)["0"].argsort(descending=True)[:2]
    assert set(mask["0.bias"].nonzero().squeeze(1).tolist()) == set(default.tolist())
    assert mask["0.weight"][default].all() and int(mask["0.weight"].sum()) == 10
    assert len(best) == 2
    with pytest.raises(ValueError, match="curvature needs"):
        influence.select("curvature", probe, ratio=0.5)


@pytest.mark.parametrize("eigen_corrected", [False, True])
def test_kfac_solve_redoes_a_failed_float32_eigendecomposition_in_float64(eigen_corrected, monkeypatch):
    """LAPACK's float32 ``eigh`` can fail on an ill-conditioned Kronecker factor (it did on
    Fashion-MNIST): the solve then runs in float64, returns Δθ in the model's dtype and says so."""
    import curvlinops.ekfac
    import curvlinops.inverse

    model, x, y = _mlp()
    model, x = model.float(), x.float()
    grad = {k: torch.randn_like(p) for k, p in model.named_parameters()}
    kwargs = dict(eigen_corrected=eigen_corrected, damping=0.05, fisher_type="empirical")
    real = torch.linalg.eigh

    def fails_in_float32(matrix, *args, **kw):
        if matrix.dtype == torch.float32:
            raise torch.linalg.LinAlgError("linalg.eigh: The algorithm failed to converge")
        return real(matrix, *args, **kw)

    monkeypatch.setattr(curvlinops.inverse, "eigh", fails_in_float32)
    monkeypatch.setattr(curvlinops.ekfac, "eigh", fails_in_float32)
    delta, info = influence.kfac_solve(model, [(x, y)], grad, **kwargs)
    assert "float64" in info.hvp and all(d.dtype == torch.float32 for d in delta.values())
    wide = model.double()
    expected, _ = influence.kfac_solve(wide, [(x.double(), y)], {k: v.double() for k, v in grad.items()}, **kwargs)
    for name, d in delta.items():
        torch.testing.assert_close(d, expected[name].float())
