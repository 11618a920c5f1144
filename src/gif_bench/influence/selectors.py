"""Parameter selectors: which subset J of the parameters an influence update may change.

Only ``nn.Conv2d`` and ``nn.Linear`` weights and biases are selectable (BatchNorm and every
other parameter never are). Each selectable layer gets its own budget

    k_layer = int(ratio · (#weight + #bias)).

Structured selectors score the layer's output units (conv channels / linear neurons) on a
sample of the data to be edited and take whole units — the unit's fan-in weights and its
bias — in score order; the budget left when the next whole unit no longer fits is filled with
randomly chosen fan-in weights of that next unit.

* ``highest_k_outputs`` / ``lowest_k_outputs``: score = |mean over batch (and space) of the
  layer output| (before any BatchNorm), descending / ascending.
* ``highest_k_gradients`` / ``lowest_k_gradients``: score = |mean of ∂loss/∂(layer output)|.
* ``random``: ``k_layer`` individual weights and biases, uniformly at random.
* ``all``: every selectable parameter (``ratio`` ignored).

Ascending orders use a stable sort, so ties keep their unit order.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

SELECTORS = (
    "highest_k_outputs",
    "highest_k_gradients",
    "lowest_k_outputs",
    "lowest_k_gradients",
    "random",
    "all",
)
SELECTABLE = (nn.Conv2d, nn.Linear)

LossFn = Callable[[Tensor, Tensor], Tensor]


def selectable_layers(model: nn.Module) -> dict[str, nn.Module]:
    """Conv2d and Linear submodules by qualified name."""
    return {name: m for name, m in model.named_modules() if isinstance(m, SELECTABLE)}


def layer_budget(layer: nn.Module, ratio: float) -> int:
    """``int(ratio · (#weight + #bias))`` for one layer."""
    size = layer.weight.numel() + (layer.bias.numel() if layer.bias is not None else 0)
    return int(ratio * size)


def _unit_scores(model: nn.Module, kind: str, batch: tuple[Tensor, Tensor], loss_fn: LossFn) -> dict[str, Tensor]:
    """Per-output-unit score |mean over batch and space| of the outputs or their gradients."""
    layers = selectable_layers(model)
    outputs: dict[str, Tensor] = {}
    hooks = [
        m.register_forward_hook(lambda _m, _i, out, name=name: outputs.__setitem__(name, out))
        for name, m in layers.items()
    ]
    was_training = model.training
    model.eval()
    try:
        x, y = batch
        with torch.enable_grad():
            logits = model(x)
            if kind == "gradients":
                names = list(outputs)
                grads = torch.autograd.grad(loss_fn(logits, y), [outputs[n] for n in names], allow_unused=True)
                values = {n: (g if g is not None else torch.zeros_like(outputs[n])) for n, g in zip(names, grads)}
            else:
                values = {n: o.detach() for n, o in outputs.items()}
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
    return {n: v.transpose(0, 1).reshape(v.shape[1], -1).mean(dim=1).abs() for n, v in values.items()}


def _structured_mask(layer: nn.Module, scores: Tensor, budget: int, descending: bool, gen: torch.Generator):
    weight = layer.weight
    n_units = weight.shape[0]
    fan_in = weight[0].numel()
    has_bias = layer.bias is not None
    unit_size = fan_in + int(has_bias)
    order = torch.sort(scores.detach().cpu(), descending=descending, stable=True).indices
    w_mask = torch.zeros(n_units, fan_in, dtype=torch.bool)
    b_mask = torch.zeros(n_units, dtype=torch.bool)
    n_full = min(budget // unit_size, n_units)
    full = order[:n_full]
    w_mask[full] = True
    b_mask[full] = True
    rest = budget - n_full * unit_size
    if rest > 0 and n_full < n_units:
        nxt = int(order[n_full])
        w_mask[nxt, torch.randperm(fan_in, generator=gen)[: min(rest, fan_in)]] = True
    masks = {"weight": w_mask.reshape(weight.shape).to(weight.device)}
    if has_bias:
        masks["bias"] = b_mask.to(layer.bias.device)
    return masks


def _random_mask(layer: nn.Module, budget: int, gen: torch.Generator):
    shapes = {"weight": layer.weight}
    if layer.bias is not None:
        shapes["bias"] = layer.bias
    total = sum(p.numel() for p in shapes.values())
    flat = torch.zeros(total, dtype=torch.bool)
    flat[torch.randperm(total, generator=gen)[:budget]] = True
    masks, i = {}, 0
    for key, p in shapes.items():
        masks[key] = flat[i : i + p.numel()].reshape(p.shape).to(p.device)
        i += p.numel()
    return masks


def select(
    name: str,
    model: nn.Module,
    ratio: float = 0.05,
    batch: tuple[Tensor, Tensor] | None = None,
    loss_fn: LossFn = F.cross_entropy,
    seed: int = 0,
) -> dict[str, Tensor]:
    """Boolean mask J for every parameter of ``model`` (same keys as ``named_parameters``).

    Args:
        name: one of :data:`SELECTORS`.
        model: the trained network (scored in eval mode; its mode is restored).
        ratio: modification ratio in (0, 1], the per-layer budget fraction.
        batch: ``(x, y)`` sample of the data to be edited; needed by the output and gradient
            selectors.
        loss_fn: ``(logits, targets) -> scalar`` for the gradient selectors.
        seed: seeds the random choices (``random``, and the partial unit of the others).
    """
    if name not in SELECTORS:
        raise ValueError(f"selector={name!r} is not one of {', '.join(SELECTORS)}")
    if not 0.0 < ratio <= 1.0:
        raise ValueError(f"ratio must be in (0, 1], got {ratio}")
    gen = torch.Generator().manual_seed(seed)
    mask = {n: torch.zeros_like(p, dtype=torch.bool) for n, p in model.named_parameters()}
    layers = selectable_layers(model)
    scores = {}
    if name.endswith(("_outputs", "_gradients")):
        if batch is None:
            raise ValueError(f"selector={name} needs a batch of the data to edit")
        scores = _unit_scores(model, name.rsplit("_", 1)[1], batch, loss_fn)
    for lname, layer in layers.items():
        prefix = f"{lname}." if lname else ""
        if name == "all":
            layer_masks = {"weight": torch.ones_like(layer.weight, dtype=torch.bool)}
            if layer.bias is not None:
                layer_masks["bias"] = torch.ones_like(layer.bias, dtype=torch.bool)
        elif name == "random":
            layer_masks = _random_mask(layer, layer_budget(layer, ratio), gen)
        else:
            descending = name.startswith("highest")
            layer_masks = _structured_mask(layer, scores[lname], layer_budget(layer, ratio), descending, gen)
        for key, m in layer_masks.items():
            mask[prefix + key] = m
    return mask
