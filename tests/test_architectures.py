"""The library beyond VGG: a transformer classifier (nn.MultiheadAttention, LayerNorm) and
torchvision's ResNet-18, in float64 on tiny widths — products against a double-backward
reference, selector budgets, and the restricted solves equal to the plain ones."""

import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from gif_bench import influence, runner
from gif_bench.influence import tree
from gif_bench.influence.hvp import math_attention
from gif_bench.influence.selectors import block_parameters
from gif_bench.models import cifar_resnet18


class TinyTransformer(nn.Module):
    """A sequence classifier: Linear embedding, one post-norm encoder layer (2 heads), mean
    pooling, Linear head — PyTorch's standard blocks, fused attention kernel included."""

    def __init__(self, features: int = 4, d: int = 8, heads: int = 2, classes: int = 3):
        super().__init__()
        self.embed = nn.Linear(features, d)
        layer = nn.TransformerEncoderLayer(d, heads, dim_feedforward=16, dropout=0.0, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, num_layers=1, enable_nested_tensor=False)
        self.head = nn.Linear(d, classes)

    def forward(self, x):
        return self.head(self.encoder(self.embed(x)).mean(1))


class HeadAttention(nn.Module):
    """Hand-written attention with q/k/v Linears and a ``num_heads`` attribute."""

    def __init__(self, d: int = 8, num_heads: int = 2):
        super().__init__()
        self.num_heads = num_heads
        self.q, self.k, self.v = nn.Linear(d, d), nn.Linear(d, d), nn.Linear(d, d)

    def forward(self, x):
        b, n, d = x.shape

        def split(t):
            return t.view(b, n, self.num_heads, -1).transpose(1, 2)

        out = F.scaled_dot_product_attention(split(self.q(x)), split(self.k(x)), split(self.v(x)))
        return out.transpose(1, 2).reshape(b, n, d)


class CrossWidthAttention(nn.Module):
    """nn.MultiheadAttention whose keys and values have their own widths (``kdim``, ``vdim``:
    separate q/k/v projection weights), called with keyword arguments; ``bias=False`` drops
    its in-projection bias."""

    def __init__(self, bias: bool = True, features: int = 4, d: int = 8, classes: int = 3):
        super().__init__()
        self.q, self.k, self.v = nn.Linear(features, d), nn.Linear(features, 6), nn.Linear(features, 5)
        self.attn = nn.MultiheadAttention(d, 2, kdim=6, vdim=5, bias=bias, batch_first=True)
        self.head = nn.Linear(d, classes)

    def forward(self, x):
        out, _ = self.attn(query=self.q(x), key=self.k(x), value=self.v(x), need_weights=False)
        return self.head(out.mean(1))


def _transformer_problem():
    torch.manual_seed(0)
    model = TinyTransformer().double().eval()
    gen = torch.Generator().manual_seed(1)
    x, y = torch.randn(6, 5, 4, generator=gen, dtype=torch.float64), torch.randint(0, 3, (6,), generator=gen)
    return model, x, y


def _resnet_problem():
    torch.manual_seed(0)
    model = cifar_resnet18(in_channels=3, num_classes=4, width=1 / 32).double().eval()
    with torch.no_grad():  # running statistics that are not the identity
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 1.5)
    gen = torch.Generator().manual_seed(1)
    x, y = torch.randn(4, 3, 8, 8, generator=gen, dtype=torch.float64), torch.randint(0, 4, (4,), generator=gen)
    return model, x, y


PROBLEMS = {"transformer": _transformer_problem, "resnet18": _resnet_problem}


def _loss(model, x, y):
    def loss(p):
        return F.cross_entropy(torch.func.functional_call(model, p, (x,)), y)

    return loss


def _params(model):
    return {k: v.detach() for k, v in model.named_parameters()}


def _double_backward(loss, params, v):
    """H v by two reverse passes through autograd (math attention: the fused kernel has no
    double backward)."""
    leaves = {k: t.clone().requires_grad_(True) for k, t in params.items()}
    with math_attention():
        grads = torch.autograd.grad(loss(leaves), list(leaves.values()), create_graph=True)
        hv = torch.autograd.grad(grads, list(leaves.values()), grad_outputs=[v[k] for k in leaves])
    return dict(zip(leaves, hv))


def _rel(a, b):
    return float(torch.linalg.vector_norm(a - b) / torch.linalg.vector_norm(b))


@pytest.mark.parametrize("problem", PROBLEMS)
@pytest.mark.parametrize("mode", influence.hvp.MODES)
def test_products_match_double_backward(problem, mode):
    model, x, y = PROBLEMS[problem]()
    loss, params = _loss(model, x, y), _params(model)
    v = {k: torch.randn_like(t) for k, t in params.items()}
    product = influence.hvp_fn(loss, params, mode=mode)
    assert _rel(tree.flatten(product(v)), tree.flatten(_double_backward(loss, params, v))) < 1e-10
    # the fused attention kernel has no forward-mode derivative and no double backward
    assert product.form == (f"{mode}, math attention" if problem == "transformer" else mode)


def test_the_fused_attention_kernel_really_lacks_the_derivatives():
    """What the fallback is for: without it, every mode fails on the transformer."""
    model, x, y = _transformer_problem()
    loss, params = _loss(model, x, y), _params(model)
    v = {k: torch.randn_like(t) for k, t in params.items()}
    for mode in influence.hvp.MODES:
        build = influence.hvp_fn(loss, params, mode=mode)._build
        with pytest.raises((NotImplementedError, RuntimeError), match="not implemented|not support"):
            build(mode)(v)


def test_gauss_newton_products_fall_back_on_attention():
    model, x, y = _transformer_problem()
    params = _params(model)
    v = {k: torch.randn_like(t) for k, t in params.items()}

    def outputs(p):
        return torch.func.functional_call(model, p, (x,))

    ggn = influence.ggn_fn(outputs, lambda z: F.cross_entropy(z, y), params)
    with math_attention():  # G v = Jᵀ (∇²_z L) J v by explicit Jacobians
        jac = torch.func.jacrev(lambda flat: outputs(tree.unflatten(flat, params)))(tree.flatten(params))
        jac = jac.reshape(-1, jac.shape[-1])
    z = outputs(params).detach()
    hz = torch.func.hessian(lambda t: F.cross_entropy(t.reshape(z.shape), y))(z.flatten())
    expected = jac.T @ hz @ jac @ tree.flatten(v)
    assert _rel(tree.flatten(ggn(v)), expected) < 1e-10 and ggn.form == "forward, math attention"


@pytest.mark.parametrize("problem", PROBLEMS)
@pytest.mark.parametrize("name", influence.SELECTORS)
@pytest.mark.parametrize("ratio", [0.05, 0.3])
def test_selector_budgets_and_never_a_normalisation_parameter(problem, name, ratio):
    model, x, y = PROBLEMS[problem]()
    params = dict(model.named_parameters())
    curvature = {
        "grad": {k: torch.randn_like(p) for k, p in params.items()},
        "fisher": {k: torch.ones_like(p) for k, p in params.items()},
    }
    mask = influence.select(name, model, ratio=ratio, batch=(x, y), seed=2, **curvature)
    modules = dict(model.named_modules())
    for pname, m in mask.items():
        owner = modules[pname.rsplit(".", 1)[0]]
        if isinstance(owner, (nn.LayerNorm, nn.BatchNorm2d)):
            assert not m.any(), pname
    for lname, layer in influence.selectable_layers(model).items():
        block = block_parameters(layer)
        chosen = sum(int(mask[f"{lname}.{k}"].sum()) for k in block)
        size = sum(p.numel() for p in block.values())
        assert chosen == (size if name == "all" else int(ratio * size)), lname


ATTENTION_VARIANTS = {
    "encoder": lambda: TinyTransformer(),
    "encoder_float64_default": lambda: TinyTransformer(),  # built and scored with float64 as the default dtype
    "kdim_vdim": lambda: CrossWidthAttention(),
    "kdim_vdim_no_bias": lambda: CrossWidthAttention(bias=False),
}


@pytest.fixture
def float64_default(request):
    """float64 as torch's default dtype while the test runs, where the variant asks for it."""
    before = torch.get_default_dtype()
    if request.node.callspec.params["variant"].endswith("float64_default"):
        torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(before)


@pytest.mark.parametrize("variant", ATTENTION_VARIANTS)
@pytest.mark.parametrize("name", influence.SELECTORS)
def test_every_selector_on_float64_attention_variants(variant, name, float64_default):
    """Each selector gives a bool mask shaped like the parameters, meets every layer's budget
    int(ratio · (#weight + #bias)) exactly (0.47: a partial head needs some of its biases too),
    selects nowhere else, and is a function of the seed. Before: ``index_add_(): self (Double)
    and source (Float)`` under a float64 default, an index count error on separate q/k/v
    weights, keyword-called attention unscored, a bias-free one skipped by the gradient
    selectors, and partial heads short of the budget."""
    torch.manual_seed(0)
    model = ATTENTION_VARIANTS[variant]().double().eval()
    gen = torch.Generator().manual_seed(1)
    x, y = torch.randn(6, 5, 4, generator=gen, dtype=torch.float64), torch.randint(0, 3, (6,), generator=gen)
    params = dict(model.named_parameters())
    curvature = {
        "grad": {k: torch.randn(p.shape, generator=gen, dtype=p.dtype) for k, p in params.items()},
        "fisher": {k: torch.rand(p.shape, generator=gen, dtype=p.dtype) for k, p in params.items()},
    }
    ratio = 0.47
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # every layer is called as a module: none may be skipped
        mask = influence.select(name, model, ratio=ratio, batch=(x, y), seed=3, **curvature)
        again = influence.select(name, model, ratio=ratio, batch=(x, y), seed=3, **curvature)
    assert list(mask) == list(params)
    assert all(m.dtype == torch.bool and m.shape == params[k].shape for k, m in mask.items())
    assert all(torch.equal(mask[k], again[k]) for k in mask)
    counted = set()
    for lname, layer in influence.selectable_layers(model).items():
        block = {f"{lname}.{k}": p for k, p in block_parameters(layer).items()}
        counted.update(block)
        size = sum(p.numel() for p in block.values())
        assert sum(int(mask[k].sum()) for k in block) == (size if name == "all" else int(ratio * size)), lname
    assert not any(mask[k].any() for k in params if k not in counted)  # LayerNorm, nothing else


def test_attention_heads_are_units():
    model, x, y = _transformer_problem()
    attention = model.encoder.layers[0].self_attn
    size = sum(p.numel() for p in block_parameters(attention).values())  # q, k, v of 2 heads of 4
    mask = influence.select("highest_k_outputs", model, ratio=0.5, batch=(x, y))  # one whole head
    rows = mask["encoder.layers.0.self_attn.in_proj_weight"]
    per_head = rows.all(1).reshape(3, 2, 4).all(-1)  # (q, k, v) × head: every row of the head
    assert per_head.all(0).sum() == 1 and (per_head == per_head[0]).all()
    assert int(rows.sum() + mask["encoder.layers.0.self_attn.in_proj_bias"].sum()) == size // 2

    torch.manual_seed(0)
    hand = HeadAttention().eval()
    with torch.no_grad():  # head 1 of q has the larger outputs
        hand.q.bias.copy_(torch.tensor([0.1] * 4 + [5.0] * 4))
        hand.q.weight.zero_()
    mask = influence.select("highest_k_outputs", hand, ratio=0.5, batch=(torch.randn(3, 5, 8), None))
    assert mask["q.bias"].tolist() == [False] * 4 + [True] * 4


def test_the_unused_out_proj_is_scored_through_its_attention_module():
    model, x, y = _transformer_problem()
    name = "encoder.layers.0.self_attn.out_proj"
    outputs = {}
    attention = model.encoder.layers[0].self_attn
    hook = attention.register_forward_hook(lambda _m, _i, out: outputs.__setitem__("o", out[0].detach()))
    with math_attention():
        model(x)
    hook.remove()
    scores = outputs["o"].reshape(-1, 8).mean(0).abs()
    mask = influence.select("highest_k_outputs", model, ratio=0.25, batch=(x, y))  # 2 of 8 units
    assert mask[f"{name}.bias"].nonzero().squeeze(1).tolist() == sorted(scores.argsort(descending=True)[:2].tolist())


def test_a_layer_never_called_as_a_module_is_skipped_with_a_reason():
    class Bypass(nn.Module):
        def __init__(self):
            super().__init__()
            self.used, self.unused = nn.Linear(3, 4), nn.Linear(3, 4)

        def forward(self, x):
            return self.used(x) + F.linear(x, self.unused.weight)

    with pytest.warns(UserWarning, match=r"unused: it is never called as a module"):
        mask = influence.select("highest_k_gradients", Bypass(), 0.5, batch=(torch.randn(5, 3), torch.zeros(5).long()))
    assert not mask["unused.weight"].any() and int(mask["used.weight"].sum() + mask["used.bias"].sum()) == 8


@pytest.mark.parametrize("problem", PROBLEMS)
@pytest.mark.parametrize("method", ["gif", "freezing"])
def test_solves_with_the_model_equal_the_plain_ones(problem, method):
    model, x, y = PROBLEMS[problem]()
    loss, params = _loss(model, x, y), _params(model)
    mask = influence.select("highest_k_outputs", model, ratio=0.3, batch=(x, y))
    grad = {k: torch.randn_like(t) for k, t in params.items()}
    opts = dict(solver="cg", tol=0.0, max_iter=8, return_info=True)
    plain, plain_info = influence.solve(method, loss, params, grad, mask=mask, hvp="reverse", **opts)
    split, info = influence.solve(method, loss, params, grad, mask=mask, model=model, **opts)
    assert _rel(tree.flatten(split), tree.flatten(plain)) < 1e-8
    if problem == "resnet18":  # every selected unit is a convolution or the head run as a module
        assert info.hvp == "restricted linearize" and plain_info.hvp == "reverse"
    else:  # the selection touches the in-projection, which is no Conv/Linear unit
        assert info.hvp == "linearize, math attention" and plain_info.hvp == "reverse, math attention"


def test_restricted_products_decline_where_a_layer_is_not_run_through_its_module():
    model, x, y = _transformer_problem()
    loss, params = _loss(model, x, y), _params(model)
    mask = {k: torch.zeros_like(t, dtype=torch.bool) for k, t in params.items()}
    mask["encoder.layers.0.self_attn.out_proj.weight"][0] = True  # a unit of the Linear MHA never calls
    mask["head.weight"][1] = True
    grad = {k: torch.randn_like(t) for k, t in params.items()}
    opts = dict(solver="cg", tol=0.0, max_iter=5, return_info=True)
    plain, _ = influence.solve("gif", loss, params, grad, mask=mask, hvp="reverse", **opts)
    split, info = influence.solve("gif", loss, params, grad, mask=mask, model=model, **opts)
    assert _rel(tree.flatten(split), tree.flatten(plain)) < 1e-8
    assert "restricted products declined" in info.hvp and "out_proj" in info.hvp


def test_a_harness_run_with_resnet18(make_cfg):
    row = runner.run(make_cfg("model=resnet18", "model.width=0.0625", "hessian.product=linearize"))
    assert row["status"] == "ok" and row["model"] == "resnet18" and 0 < row["n_selected"] < row["n_params"]
    assert row["solver_hvp"] == "restricted linearize"
