"""BatchNorm folded into the convolution: same function, same derivatives, same names."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from gif_bench import influence
from gif_bench.influence import tree
from gif_bench.influence.fold import FoldedConv, fold_batchnorm
from tests.test_masked import _conv_problem


def _functional_loss(model, x, y):
    buffers = dict(model.named_buffers())
    return lambda p: F.cross_entropy(torch.func.functional_call(model, (p, buffers), (x,)), y)


def test_folded_copy_keeps_names_and_outputs_and_leaves_the_original_alone():
    model, _, params, (x, _) = _conv_problem()
    folded = fold_batchnorm(model)
    assert isinstance(folded[0], FoldedConv)
    assert [k for k, _ in folded.named_parameters()] == [k for k, _ in model.named_parameters()]
    assert [k for k, _ in folded.named_buffers()] == [k for k, _ in model.named_buffers()]
    assert isinstance(model[0], nn.Conv2d) and isinstance(model[1], nn.BatchNorm2d)
    assert torch.allclose(folded(x), model(x), rtol=1e-12, atol=1e-12)
    with torch.no_grad():  # no shared storage
        folded[0].weight.add_(1.0)
    assert torch.equal(model[0].weight, params["0.weight"])


def test_folded_copy_reads_the_parameters_it_is_called_with():
    model, _, params, (x, y) = _conv_problem()
    folded = fold_batchnorm(model)
    other = {k: v + 0.1 * torch.randn_like(v) for k, v in params.items()}
    original, on_folded = _functional_loss(model, x, y), _functional_loss(folded, x, y)
    assert torch.allclose(on_folded(other), original(other), rtol=1e-12)
    h, h_folded = influence.hessian_matrix(original, other), influence.hessian_matrix(on_folded, other)
    assert torch.allclose(h_folded, h, rtol=1e-9, atol=1e-11)
    v = {k: torch.randn_like(t) for k, t in params.items()}
    product = influence.hvp_fn(on_folded, other)(v)
    assert torch.allclose(tree.flatten(product), h @ tree.flatten(v), rtol=1e-9, atol=1e-11)


def test_folded_model_refuses_training_mode():
    model, *_ = _conv_problem()
    folded = fold_batchnorm(model)
    with pytest.raises(RuntimeError, match="evaluation only"):
        folded.train()


def test_only_adjacent_conv_batchnorm_pairs_are_folded():
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.BatchNorm2d(2), nn.Linear(4, 4)).eval()
    folded = fold_batchnorm(model)
    assert [type(m) for m in folded] == [nn.Conv2d, nn.ReLU, nn.BatchNorm2d, nn.Linear]
