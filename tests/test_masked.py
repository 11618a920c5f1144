"""Unit-restricted Hessian products against the explicit Hessian, and their use in solve."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from gif_bench import influence
from gif_bench.influence import tree
from gif_bench.influence.fold import fold_batchnorm
from gif_bench.influence.linearize import linearized
from gif_bench.influence.masked import masked_hvps


def _conv_problem(seed: int = 0):
    """A small conv net (conv → BN → tanh → strided conv → tanh → linear), float64, eval mode."""
    torch.manual_seed(seed)
    model = nn.Sequential(
        nn.Conv2d(2, 4, 3, padding=1),
        nn.BatchNorm2d(4),
        nn.Tanh(),
        nn.Conv2d(4, 5, 3, stride=2, padding=1),
        nn.Tanh(),
        nn.Flatten(),
        nn.Linear(5 * 3 * 3, 3),
    ).double()
    with torch.no_grad():  # non-trivial running statistics and affine parameters
        model[1].running_mean.uniform_(-0.5, 0.5)
        model[1].running_var.uniform_(0.5, 2.0)
        model[1].weight.uniform_(0.5, 1.5)
        model[1].bias.uniform_(-0.5, 0.5)
    model.eval()
    x = torch.randn(12, 2, 6, 6, dtype=torch.double)
    y = torch.randint(0, 3, (12,))
    params = {k: v.detach() for k, v in model.named_parameters()}
    buffers = dict(model.named_buffers())

    def loss(p):
        return F.cross_entropy(torch.func.functional_call(model, (p, buffers), (x,)), y)

    return model, loss, params, (x, y)


def _unit_mask(params, units: dict[str, list[int]], partial: dict[str, tuple[int, int]] = ()):
    """Whole output units per layer, plus ``partial[layer] = (unit, n)``: n fan-in weights of a unit."""
    mask = {k: torch.zeros_like(v, dtype=torch.bool) for k, v in params.items()}
    for layer, rows in units.items():
        for r in rows:
            mask[f"{layer}.weight"][r] = True
            mask[f"{layer}.bias"][r] = True
    for layer, (r, n) in dict(partial).items():
        mask[f"{layer}.weight"][r].view(-1)[:n] = True
    return mask


def _rel(a, b):
    return float(torch.linalg.vector_norm(a - b) / torch.linalg.vector_norm(b))


@pytest.mark.parametrize("fold", [False, True], ids=["as_written", "batchnorm_folded"])
def test_restricted_products_equal_the_explicit_hessian(fold):
    model, loss, params, (x, y) = _conv_problem()
    if fold:  # the unit offsets of a folded convolution are scaled by its BatchNorm's γ/σ
        model = fold_batchnorm(model)
        buffers = dict(model.named_buffers())

        def loss(p):
            return F.cross_entropy(torch.func.functional_call(model, (p, buffers), (x,)), y)

    mask = _unit_mask(params, {"0": [1], "3": [0, 3], "6": [2]}, partial={"3": (4, 7)})
    products = masked_hvps(loss, params, mask, model)
    assert products is not None
    h = influence.hessian_matrix(loss, params)
    p = tree.flatten(mask).double()
    v = {k: torch.randn_like(t) for k, t in params.items()}
    flat_v = tree.flatten(v)
    assert _rel(tree.flatten(products.columns(v)), h @ (p * flat_v)) < 1e-10
    assert _rel(tree.flatten(products.rows(v)), p * (h @ flat_v)) < 1e-10
    assert _rel(tree.flatten(products.block(v)), p * (h @ (p * flat_v))) < 1e-10
    off = ~tree.flatten(mask)
    assert torch.equal(tree.flatten(products.rows(v))[off], torch.zeros(int(off.sum()), dtype=torch.double))


def test_the_model_is_left_without_hooks():
    model, loss, params, _ = _conv_problem()
    products = masked_hvps(loss, params, _unit_mask(params, {"3": [1]}), model)
    products.columns(params)
    assert all(not m._forward_hooks for m in model.modules())


@pytest.mark.parametrize(
    "case",
    ["batchnorm parameter selected", "every unit touched"],
)
def test_falls_back_to_plain_products_where_a_split_does_not_apply(case):
    model, loss, params, _ = _conv_problem()
    if case == "batchnorm parameter selected":
        mask = _unit_mask(params, {"3": [0]})
        mask["1.weight"][0] = True
    else:
        mask = {k: torch.zeros_like(v, dtype=torch.bool) for k, v in params.items()}
        for k in ("0.weight", "3.weight", "6.weight"):
            mask[k].view(mask[k].shape[0], -1)[:, 0] = True  # one weight in every unit
    assert masked_hvps(loss, params, mask, model) is None


def test_a_loss_that_does_not_run_the_model_is_refused():
    _, loss, params, _ = _conv_problem()
    fresh = nn.Sequential(*[nn.Identity() for _ in range(3)], nn.Conv2d(4, 5, 3, stride=2, padding=1)).double()
    products = masked_hvps(loss, params, _unit_mask(params, {"3": [1]}), fresh)
    with pytest.raises(ValueError, match="never runs the layer"):  # the loss evaluates another model
        products.columns(params)


def _penalised_mlp(penalty: float):
    """Linear–Tanh–Linear, float64, with loss = CE + ½λ‖θ‖² (λ = ``penalty``): the penalty runs
    through no module."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 6), nn.Tanh(), nn.Linear(6, 3)).double().eval()
    x, y = torch.randn(20, 3, dtype=torch.double), torch.randint(0, 3, (20,))
    params = {k: v.detach() for k, v in model.named_parameters()}

    def loss(p):
        ce = F.cross_entropy(torch.func.functional_call(model, p, (x,)), y)
        return ce + 0.5 * penalty * sum(t.pow(2).sum() for t in p.values())

    return model, loss, params


@pytest.mark.parametrize("method", ["gif", "freezing"])
@pytest.mark.parametrize("penalty", [0.0, 1e-2], ids=["ce", "ce_plus_l2"])
def test_a_loss_term_outside_the_model_declines_the_restricted_products(method, penalty):
    """The products through δ cannot see ½λ‖θ‖²: without the decline, H P_J v lost λ P_J v
    (relative errors 0.64 for gif and 6.4 for freezing here). With it, the update is the exact
    one and info.hvp says why the plain products ran; a plain loss keeps the restricted ones."""
    model, loss, params = _penalised_mlp(penalty)
    mask = _unit_mask(params, {"0": [1, 4], "2": [0]}, partial={"2": (2, 3)})
    grad = {k: torch.randn_like(v) for k, v in params.items()}
    exact = influence.solve(method, loss, params, grad, mask=mask, solver="exact")
    delta, info = influence.solve(
        method, loss, params, grad, mask=mask, model=model, solver="cg", tol=1e-14, max_iter=200, return_info=True
    )
    assert _rel(tree.flatten(delta), tree.flatten(exact)) <= 1e-8
    if penalty:
        assert info.hvp.startswith("linearize (restricted products declined: loss has terms")
        assert "outside the model's modules" in info.hvp
    else:
        assert info.hvp == "restricted linearize"


@pytest.mark.parametrize("method", ["gif", "freezing"])
@pytest.mark.parametrize("solver", ["cg", "lsqr"])
def test_solve_with_the_model_gives_the_same_update(method, solver):
    model, loss, params, _ = _conv_problem()
    mask = _unit_mask(params, {"0": [0, 2], "3": [1], "6": [0]}, partial={"6": (1, 20)})
    grad = {k: torch.randn_like(v) for k, v in params.items()}
    opts = dict(tol=0.0, max_iter=10)  # the same Krylov iterates from the same products
    plain = influence.solve(method, loss, params, grad, mask=mask, solver=solver, **opts)
    split = influence.solve(method, loss, params, grad, mask=mask, solver=solver, model=model, **opts)
    assert _rel(tree.flatten(split), tree.flatten(plain)) < 1e-6  # rounding, amplified by CG


def test_linearized_skips_tangent_work_that_is_known_to_be_zero():
    torch.manual_seed(0)
    x = torch.randn(4, 2, 6, 6, dtype=torch.double)
    at = {"w": torch.randn(3, 2, 3, 3, dtype=torch.double), "d": torch.zeros(3, 2, 3, 3, dtype=torch.double)}

    def fn(q):  # J v = conv(x, v_w)·conv(x, d) + conv(x, w)·conv(x, v_d), and d = 0
        return {"y": F.conv2d(x, q["w"]) * F.conv2d(x, q["d"]) + F.conv2d(x, q["w"]).tanh()}

    v = {k: torch.randn_like(t) for k, t in at.items()}
    product = linearized(fn, at)
    expected = torch.func.jvp(fn, (at,), (v,))[1]["y"]
    assert torch.allclose(product(v)["y"], expected, rtol=1e-12, atol=1e-12)
    graph = product.graph_module.graph
    convs = [n for n in graph.nodes if n.op == "call_function" and "convolution" in str(n.target)]
    assert len(convs) == 2  # conv(x, v_w) for the tanh term and conv(x, v_d); conv(x, v_w)·0 is gone


def test_copies_that_change_nothing_are_elided():
    from torch.fx.experimental.proxy_tensor import make_fx

    from gif_bench.influence.linearize import _drop_known_zeros

    def fn(x):  # forward AD writes tangents through such identity copies
        y = torch.ops.aten._to_copy.default(x.expand(3, 4), dtype=torch.float32)
        return y * 2, torch.ops.aten._to_copy.default(x, dtype=torch.float64)

    x = torch.randn(3, 4)
    gm = make_fx(fn)(x)
    _drop_known_zeros(gm)
    targets = [str(n.target) for n in gm.graph.nodes if n.op == "call_function"]
    assert targets.count("aten._to_copy.default") == 1  # only the one that changes the dtype is left
    assert "aten.expand.default" not in targets
    out = gm(x)
    assert torch.equal(out[0], x * 2) and out[1].dtype == torch.float64
