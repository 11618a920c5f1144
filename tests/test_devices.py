"""The Hessian-product path and one harness run on each accelerator this machine has, against
the CPU in float64. Without an accelerator (CI) pytest reports them skipped: empty parameter set."""

import pytest
import torch
import torch.nn.functional as F

from gif_bench import influence, models, runner
from gif_bench.influence import tree
from gif_bench.influence.masked import masked_hvps

ACCELERATORS = ["cuda"] if torch.cuda.is_available() else []
pytestmark = pytest.mark.parametrize("device", ACCELERATORS)


def _vgg(device: str):
    """A width-0.125 VGG-11 (BN folded, non-trivial statistics), a batch and its loss, float64."""
    torch.manual_seed(0)
    model = models.VGG(width=0.125, in_channels=3, num_classes=10).eval()
    with torch.no_grad():  # running statistics as after training, not the identity
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 2.0)
    model = influence.fold_batchnorm(model).to(device=device, dtype=torch.double)
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(16, 3, 32, 32, generator=gen, dtype=torch.double).to(device)
    y = torch.randint(0, 10, (16,), generator=gen).to(device)
    params = {k: v.detach() for k, v in model.named_parameters()}
    buffers = dict(model.named_buffers())

    def logits(p):
        return torch.func.functional_call(model, (p, buffers), (x,))

    def loss(p):
        return F.cross_entropy(logits(p), y)

    mask = influence.select("highest_k_outputs", model, ratio=0.05, batch=(x, y))  # whole units
    return model, loss, params, mask, logits, y


def _error(a: dict, b: dict) -> float:
    """‖a − b‖ / ‖b‖, both moved to the CPU."""
    flat_a = tree.flatten({k: t.cpu() for k, t in a.items()})
    flat_b = tree.flatten({k: b[k].cpu() for k in a})
    return float(torch.linalg.vector_norm(flat_a - flat_b) / torch.linalg.vector_norm(flat_b))


def _to(tensors: dict, device: str) -> dict:
    return {k: t.to(device) for k, t in tensors.items()}


def test_hessian_products_on_the_accelerator_match_the_cpu(device):
    _, loss_cpu, params_cpu, mask, logits_cpu, y_cpu = _vgg("cpu")
    model, loss, params, _, logits, y = _vgg(device)
    gen = torch.Generator().manual_seed(2)
    v_cpu = {k: torch.randn(t.shape, generator=gen, dtype=torch.double) for k, t in params_cpu.items()}
    v = _to(v_cpu, device)
    hvp_cpu = influence.hvp_fn(loss_cpu, params_cpu, mode="reverse")
    errors = {}
    for mode in influence.hvp.MODES:
        product = influence.hvp_fn(loss, params, mode=mode)(v)
        assert all(t.device.type == device for t in product.values())
        errors[mode] = _error(product, hvp_cpu(v_cpu))
    masked = masked_hvps(loss, params, _to(mask, device), model)
    assert masked is not None
    errors["H P_J v"] = _error(masked.columns(v), hvp_cpu(tree.project(v_cpu, mask)))
    errors["P_J H u"] = _error(masked.rows(v), tree.project(hvp_cpu(v_cpu), mask))

    def summed_ce(labels):
        return lambda z: F.cross_entropy(z, labels, reduction="sum")

    ggn_cpu = influence.ggn_fn(logits_cpu, summed_ce(y_cpu), params_cpu)(v_cpu)
    errors["ggn"] = _error(influence.ggn_fn(logits, summed_ce(y), params)(v), ggn_cpu)
    assert max(errors.values()) < 1e-9, errors


def test_a_gif_solve_on_the_accelerator_matches_the_cpu(device):
    _, loss_cpu, params_cpu, mask, _, _ = _vgg("cpu")
    model, loss, params, *_ = _vgg(device)
    gen = torch.Generator().manual_seed(3)
    grad_cpu = {k: torch.randn(t.shape, generator=gen, dtype=torch.double) for k, t in params_cpu.items()}
    on_cpu = influence.solve("gif", loss_cpu, params_cpu, grad_cpu, mask=mask, solver="cg", max_iter=20)
    on_device = influence.solve(
        "gif", loss, params, _to(grad_cpu, device), mask=_to(mask, device), solver="cg", max_iter=20, model=model
    )
    assert _error(on_device, on_cpu) < 1e-6


def test_a_harness_run_on_the_accelerator(make_cfg, device):
    row = runner.run(make_cfg(f"device={device}", "method=gif", "task=label_change", drop=("task",)))
    assert row["status"] == "ok" and row["device"].startswith(device) and row["hvps"] > 0
