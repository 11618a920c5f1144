"""Selectors: per-layer budgets, no BatchNorm, and the orderings the right way round."""

import pytest
import torch
from torch import nn

from gif_bench import influence
from gif_bench.models import VGG

ALL = influence.SELECTORS


def _small_vgg():
    torch.manual_seed(0)
    return VGG(width=1 / 16, in_channels=3, num_classes=10).eval()


def _batch():
    gen = torch.Generator().manual_seed(1)
    return torch.randn(8, 3, 32, 32, generator=gen), torch.randint(0, 10, (8,), generator=gen)


def _curvature_inputs(model: nn.Module) -> dict:
    """A gradient and a Fisher diagonal for ``curvature`` (the other selectors ignore them)."""
    gen = torch.Generator().manual_seed(4)
    params = dict(model.named_parameters())
    grad = {k: torch.randn(p.shape, generator=gen) for k, p in params.items()}
    return {"grad": grad, "fisher": {k: torch.rand(p.shape, generator=gen) for k, p in params.items()}}


@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize("ratio", [0.05, 0.3])
def test_per_layer_budget_and_never_batchnorm(name, ratio):
    model = _small_vgg()
    mask = influence.select(name, model, ratio=ratio, batch=_batch(), seed=3, **_curvature_inputs(model))
    assert set(mask) == {n for n, _ in model.named_parameters()}
    modules = dict(model.named_modules())
    for pname, m in mask.items():
        owner = modules[pname.rsplit(".", 1)[0]]
        if isinstance(owner, nn.BatchNorm2d):
            assert not m.any(), pname
    for lname, layer in influence.selectable_layers(model).items():
        chosen = int(mask[f"{lname}.weight"].sum() + mask[f"{lname}.bias"].sum())
        size = layer.weight.numel() + layer.bias.numel()
        assert chosen == (size if name == "all" else int(ratio * size)), lname


def _probe_layer():
    """Linear(3→4) with zero weights: unit j outputs bias_j whatever the input."""
    layer = nn.Linear(3, 4)
    with torch.no_grad():
        layer.weight.zero_()
        layer.bias.copy_(torch.tensor([0.5, -4.0, 1.0, 3.0]))
    return nn.Sequential(layer)


def _units(mask):
    return mask["0.bias"].nonzero().squeeze(1).tolist()


def test_output_orderings():
    model = _probe_layer()
    batch = (torch.randn(5, 3), torch.zeros(5, dtype=torch.long))
    ratio = 8 / 16  # budget 8 = two whole units of 3 weights + 1 bias
    assert _units(influence.select("highest_k_outputs", model, ratio, batch)) == [1, 3]  # |−4|, |3|
    assert _units(influence.select("lowest_k_outputs", model, ratio, batch)) == [0, 2]  # |0.5|, |1|


def test_gradient_orderings():
    model = _probe_layer()
    batch = (torch.randn(5, 3), torch.zeros(5, dtype=torch.long))
    weights = torch.tensor([2.0, -0.1, -7.0, 0.3])  # ∂loss/∂out_j = weights_j / 5 per sample

    def loss_fn(out, _y):
        return (out * weights).mean(0).sum()

    ratio = 8 / 16
    assert _units(influence.select("highest_k_gradients", model, ratio, batch, loss_fn)) == [0, 2]
    assert _units(influence.select("lowest_k_gradients", model, ratio, batch, loss_fn)) == [1, 3]


def test_partial_unit_is_filled_with_fan_in_weights_of_the_next_unit():
    model = _probe_layer()
    batch = (torch.randn(5, 3), torch.zeros(5, dtype=torch.long))
    mask = influence.select("highest_k_outputs", model, 6 / 16, batch)  # budget 6 = one unit + 2
    assert _units(mask) == [1]
    w = mask["0.weight"]
    assert w[1].all() and int(w[3].sum()) == 2 and not w[0].any() and not w[2].any()


def test_ties_keep_unit_order_in_ascending_sort():
    layer = nn.Linear(2, 4)
    with torch.no_grad():
        layer.weight.zero_()
        layer.bias.fill_(1.0)
    mask = influence.select("lowest_k_outputs", nn.Sequential(layer), 6 / 12, (torch.randn(3, 2), None))
    assert _units(mask) == [0, 1]


def test_random_is_seeded_and_unstructured():
    model = _small_vgg()
    a = influence.select("random", model, 0.1, seed=7)
    b = influence.select("random", model, 0.1, seed=7)
    c = influence.select("random", model, 0.1, seed=8)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert any(not torch.equal(a[k], c[k]) for k in a)


def test_model_mode_is_restored_and_bad_arguments_refused():
    model = _small_vgg().train()
    influence.select("highest_k_outputs", model, 0.1, _batch())
    assert model.training
    with pytest.raises(ValueError, match="ratio"):
        influence.select("random", model, 1.5)
    with pytest.raises(ValueError, match="selector='best'"):
        influence.select("best", model, 0.1)
    with pytest.raises(ValueError, match="needs a batch"):
        influence.select("highest_k_gradients", model, 0.1)
