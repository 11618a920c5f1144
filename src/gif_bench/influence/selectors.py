"""Parameter selectors: which subset J of the parameters an influence update may change.

Only the weights and biases of ``nn.Conv2d`` and ``nn.Linear`` layers and the in-projection of
``nn.MultiheadAttention`` are selectable (normalisation layers and every other parameter never
are). Each selectable layer gets its own budget

    k_layer = int(ratio · (#weight + #bias)).

Structured selectors score the layer's output units (conv channels / linear neurons) on a
sample of the data to be edited and take whole units — the unit's fan-in weights and its
bias — in score order; the budget left when the next whole unit no longer fits is filled with
randomly chosen fan-in weights of that next unit (for an attention head, whose q, k and v rows
carry three biases, with its biases too once its weights are all taken), so every layer gets
exactly ``k_layer``.

* ``highest_k_outputs`` / ``lowest_k_outputs``: score = |mean over batch (and space) of the
  layer output| (before any BatchNorm), descending / ascending.
* ``highest_k_gradients`` / ``lowest_k_gradients``: score = |mean of ∂loss/∂(layer output)|.
* ``curvature``: score = Σ over the unit's parameters of ``g² / (diag F + λ)``, with g the edit
  gradient and F the empirical Fisher's diagonal on retained examples (:func:`curvature_scores`;
  a diagonal-Newton estimate of how much of the edit the unit can carry), descending.
* ``random``: ``k_layer`` individual weights and biases, uniformly at random.
* ``all``: every selectable parameter (``ratio`` ignored).

Ascending orders use a stable sort, so ties keep their unit order.

Attention heads are units where the layer's structure says so (see :func:`_head_rows`): the
heads of a MultiheadAttention's in-projection, and the heads of a Linear whose parent exposes
``num_heads``; a head's score is the mean of its rows' scores. A MultiheadAttention's
in-projection is ``in_proj_weight`` (3·embed_dim × embed_dim) or, where keys or values have
another width (``kdim``/``vdim``), ``q_proj_weight``, ``k_proj_weight`` and ``v_proj_weight``
(embed_dim rows each), plus ``in_proj_bias`` (3·embed_dim) unless ``bias=False``; its
``out_proj`` is a Linear of its own. A layer that is never called as a module cannot be
scored by outputs or gradients; the structured selectors then select nothing in it and warn,
naming the layer and the reason (MultiheadAttention's ``out_proj`` is scored through the
attention module's output, which is its output).

Scores are computed and compared in the dtype of the model's outputs or parameters (float64
for a float64 model, whatever ``torch.get_default_dtype()`` is).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

SELECTORS = (
    "highest_k_outputs",
    "highest_k_gradients",
    "lowest_k_outputs",
    "lowest_k_gradients",
    "curvature",
    "random",
    "all",
)
SELECTABLE = (nn.Conv2d, nn.Linear, nn.MultiheadAttention)

LossFn = Callable[[Tensor, Tensor], Tensor]

# nn.MultiheadAttention's in-projection: packed (in_proj_weight) or one matrix each for q, k, v
_ATTENTION_PARAMS = ("in_proj_weight", "q_proj_weight", "k_proj_weight", "v_proj_weight", "in_proj_bias")


def selectable_layers(model: nn.Module) -> dict[str, nn.Module]:
    """Conv2d, Linear and MultiheadAttention submodules by qualified name."""
    return {name: m for name, m in model.named_modules() if isinstance(m, SELECTABLE)}


def block_parameters(layer: nn.Module) -> dict[str, Tensor]:
    """The selectable parameters of one layer by attribute name: ``weight`` and ``bias`` of a
    Conv2d / Linear, the in-projection (``in_proj_weight`` or ``q/k/v_proj_weight``, and
    ``in_proj_bias``) of a MultiheadAttention, whose ``out_proj`` is a Linear of its own."""
    names = _ATTENTION_PARAMS if isinstance(layer, nn.MultiheadAttention) else ("weight", "bias")
    return {n: p for n in names if isinstance(p := getattr(layer, n, None), Tensor)}


def layer_budget(layer: nn.Module, ratio: float) -> int:
    """``int(ratio · (#weight + #bias))`` for one layer (its :func:`block_parameters`)."""
    return int(ratio * sum(p.numel() for p in block_parameters(layer).values()))


def _parent(model: nn.Module, name: str) -> nn.Module | None:
    if not name:
        return None
    return model.get_submodule(name.rsplit(".", 1)[0]) if "." in name else model


def _head_rows(model: nn.Module, name: str, layer: nn.Module) -> tuple[dict[str, Tensor], Tensor] | None:
    """For a layer whose units are attention heads: (attribute name → the head of each of the
    parameter's rows, the head of each scored row), or ``None`` if its units are not heads.

    A MultiheadAttention's heads own rows ``h·d … (h+1)·d − 1`` of each of q, k and v in its
    in-projection (d = embed_dim / num_heads): row r of the packed ``in_proj_weight`` and of
    ``in_proj_bias`` (3·embed_dim rows, q then k then v) is in head ``(r mod embed_dim) // d``,
    row r of a separate ``q/k/v_proj_weight`` (embed_dim rows) in head ``r // d``. Its scored
    rows are the 3·embed_dim rows of the whole in-projection, q then k then v, whichever way it
    is stored. A Linear whose parent exposes an integer ``num_heads`` dividing its outputs (a q,
    k or v projection of a hand-written attention layer) has ``out_features / num_heads``
    consecutive rows per head, and its scored rows are its rows.
    """
    if isinstance(layer, nn.MultiheadAttention):
        e, d = layer.embed_dim, layer.head_dim
        params = {n: (torch.arange(p.shape[0]) % e) // d for n, p in block_parameters(layer).items()}
        return params, (torch.arange(3 * e) % e) // d
    heads = getattr(_parent(model, name), "num_heads", None)
    if (
        isinstance(layer, nn.Linear)
        and not isinstance(_parent(model, name), nn.MultiheadAttention)
        and isinstance(heads, int)
        and heads > 1
        and layer.out_features % heads == 0
    ):
        rows = torch.arange(layer.out_features) // (layer.out_features // heads)
        return {n: rows for n in block_parameters(layer)}, rows
    return None


def _row_scores(value: Tensor, unit_dim: int) -> Tensor:
    """|mean over every dimension but ``unit_dim``| of a layer output or its gradient."""
    if unit_dim == 1 or value.dim() == 2:
        return value.transpose(0, 1).reshape(value.shape[1], -1).mean(dim=1).abs()
    return value.movedim(unit_dim, 0).reshape(value.shape[unit_dim], -1).mean(dim=1).abs()


_QKV = ("query", "key", "value")


def _attention_inputs(args: tuple[Tensor, ...], kwargs: dict[str, Any]) -> tuple[Tensor, ...]:
    """A MultiheadAttention call's query, key and value, whether passed by position or by name."""
    return tuple(args[i] if i < len(args) else kwargs[n] for i, n in enumerate(_QKV))


def _in_projection(layer: nn.MultiheadAttention, inputs: tuple[Tensor, ...]) -> Tensor:
    """The q, k and v projections of a MultiheadAttention's inputs, concatenated on the last
    dimension (3·embed_dim rows, in the order of ``in_proj_weight``)."""
    query, key, value = inputs
    e = layer.embed_dim
    if layer.in_proj_weight is not None:
        weights = layer.in_proj_weight.split(e)
    else:
        weights = (layer.q_proj_weight, layer.k_proj_weight, layer.v_proj_weight)
    biases = layer.in_proj_bias.split(e) if layer.in_proj_bias is not None else (None,) * 3
    return torch.cat([F.linear(x, w, b) for x, w, b in zip((query, key, value), weights, biases)], dim=-1)


def _unit_scores(
    model: nn.Module, kind: str, batch: tuple[Tensor, Tensor], loss_fn: LossFn
) -> tuple[dict[str, Tensor], dict[str, str]]:
    """Per-row score |mean over batch (and space or sequence)| of each layer's outputs or of
    their gradients, and the layers that cannot be scored, with the reason.

    A Linear that its parent does not call as a module (``nn.MultiheadAttention`` applies its
    ``out_proj`` weights directly) is scored through the parent's output, which is that
    Linear's output. A MultiheadAttention's rows are those of its in-projection: their outputs
    are recomputed from its inputs, and their gradients are read from ``in_proj_bias``'s
    (Σ over positions of ∂loss/∂output, the mean up to the layer's constant count). An
    attention module without a bias gets a zero one for the pass (the same function), whose
    gradient is read the same way.
    """
    from .hvp import math_attention

    layers = selectable_layers(model)
    outputs: dict[str, Tensor] = {}
    attention_inputs: dict[str, tuple[Tensor, ...]] = {}

    def record(name: str, layer: nn.Module):
        def hook(_m, args, kwargs, out):
            if isinstance(layer, nn.MultiheadAttention):
                attention_inputs[name] = _attention_inputs(args, kwargs)
                outputs[f"{name}.out_proj" if name else "out_proj"] = out[0]  # that is out_proj's output
            else:
                outputs[name] = out

        return hook

    # zero in-projection biases for the attention modules without one: ∂loss/∂bias = Σ ∂loss/∂output
    probes: dict[str, Tensor] = {}
    if kind == "gradients":
        for n, m in layers.items():
            if isinstance(m, nn.MultiheadAttention) and m.in_proj_bias is None:
                weight = next(iter(block_parameters(m).values()))
                probe = torch.zeros(3 * m.embed_dim, dtype=weight.dtype, device=weight.device, requires_grad=True)
                probes[f"{n}.in_proj_bias" if n else "in_proj_bias"] = probe
    hooks = [m.register_forward_hook(record(name, m), with_kwargs=True) for name, m in layers.items()]
    was_training = model.training
    model.eval()
    skipped: dict[str, str] = {}
    try:
        x, y = batch
        # the math kernel and no fused fast path: every attention module is called as a module
        with torch.enable_grad(), math_attention():
            logits = torch.func.functional_call(model, probes, (x,), strict=False) if probes else model(x)
            if kind == "gradients":
                biases = {
                    n: layers[n].in_proj_bias
                    if layers[n].in_proj_bias is not None
                    else probes[f"{n}.in_proj_bias" if n else "in_proj_bias"]
                    for n in attention_inputs
                }
                tensors = {**outputs, **biases}
                names = list(tensors)
                grads = torch.autograd.grad(loss_fn(logits, y), [tensors[n] for n in names], allow_unused=True)
                values = {n: (g if g is not None else torch.zeros_like(tensors[n])) for n, g in zip(names, grads)}
            else:
                values = {n: o.detach() for n, o in outputs.items()}
                for n, inputs in attention_inputs.items():
                    values[n] = _in_projection(layers[n], inputs).detach()
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
    scores = {}
    for n, v in values.items():
        if n not in layers:
            continue
        unit_dim = 1 if isinstance(layers[n], nn.Conv2d) else -1
        scores[n] = v.abs() if v.dim() == 1 and n in attention_inputs else _row_scores(v, unit_dim)
    for n in layers:
        if n not in scores and n not in skipped:
            skipped[n] = "it is never called as a module, so its outputs cannot be observed"
    return scores, skipped


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


def _random_mask(params: dict[str, Tensor], budget: int, gen: torch.Generator) -> dict[str, Tensor]:
    """``budget`` entries of ``params``, uniformly at random."""
    total = sum(p.numel() for p in params.values())
    flat = torch.zeros(total, dtype=torch.bool)
    flat[torch.randperm(total, generator=gen)[:budget]] = True
    masks, i = {}, 0
    for key, p in params.items():
        masks[key] = flat[i : i + p.numel()].reshape(p.shape).to(p.device)
        i += p.numel()
    return masks


def _head_mask(
    params: dict[str, Tensor],
    head_of_row: dict[str, Tensor],
    head_of_score: Tensor,
    row_scores: Tensor,
    budget: int,
    descending: bool,
    gen: torch.Generator,
) -> dict[str, Tensor]:
    """Whole heads in order of their mean row score (``row_scores[i]`` belongs to head
    ``head_of_score[i]``); the budget left when the next whole head no longer fits goes to
    randomly chosen weights of that head, and to its biases only once all of its weights are
    taken (a head's biases are few, so the budget is always met)."""
    n_heads = int(head_of_score.max()) + 1
    scores = row_scores.detach().cpu()  # in the scores' own dtype: float64 stays float64
    head_scores = scores.new_zeros(n_heads).index_add_(0, head_of_score, scores)
    head_scores /= torch.bincount(head_of_score, minlength=n_heads)
    order = torch.sort(head_scores, descending=descending, stable=True).indices
    head_size = sum(int((head_of_row[k] == 0).sum()) * p[0].numel() for k, p in params.items())
    n_full = min(budget // head_size, n_heads)
    masks = {}
    for k, p in params.items():
        chosen = torch.isin(head_of_row[k], order[:n_full])
        masks[k] = chosen.reshape(-1, *[1] * (p.dim() - 1)).expand(p.shape).clone()
    rest = budget - n_full * head_size
    if rest > 0 and n_full < n_heads:
        nxt = int(order[n_full])
        # the weights first, then the biases: with several weight matrices (q, k, v) a head's
        # biases can be more than the one entry per unit that a partial unit leaves out
        for group in ([k for k, p in params.items() if p.dim() > 1], [k for k, p in params.items() if p.dim() == 1]):
            if rest <= 0 or not group:
                continue
            slots = (
                torch.cat(
                    [
                        (head_of_row[k] == nxt)
                        .reshape(-1, 1)
                        .expand(params[k].shape[0], params[k][0].numel())
                        .flatten()
                        for k in group
                    ]
                )
                .nonzero()
                .squeeze(1)
            )
            picked = slots[torch.randperm(len(slots), generator=gen)[:rest]]
            flat = torch.cat([masks[k].flatten() for k in group])
            flat[picked] = True
            i = 0
            for k in group:
                masks[k] = flat[i : i + params[k].numel()].reshape(params[k].shape)
                i += params[k].numel()
            rest -= len(picked)
    return {k: m.to(params[k].device) for k, m in masks.items()}


def curvature_scores(
    model: nn.Module, grad: dict[str, Tensor], fisher: dict[str, Tensor], damping: float | None = None
) -> dict[str, Tensor]:
    """Per layer, per row (output unit; a MultiheadAttention's in-projection row): the sum over
    the row's weights and bias of ``g² / (F + λ)``, with ``grad`` g and ``fisher`` F keyed like
    ``model.named_parameters()``. ``damping`` λ ``None``: 0.1 × the mean of F over every
    selectable parameter (the damping heuristic of :mod:`~gif_bench.influence.curvature`)."""
    layers = selectable_layers(model)
    keyed = {
        lname: {k: (f"{lname}.{k}" if lname else k) for k in block_parameters(layer)} for lname, layer in layers.items()
    }
    if damping is None:
        values = torch.cat([fisher[key].flatten() for keys in keyed.values() for key in keys.values()])
        damping = 0.1 * float(values.mean())
    scores = {}
    for lname, keys in keyed.items():
        rows = {
            k: (grad[key].pow(2) / (fisher[key] + damping)).reshape(grad[key].shape[0], -1).sum(1)
            for k, key in keys.items()
        }
        split = [rows[k] for k in ("q_proj_weight", "k_proj_weight", "v_proj_weight") if k in rows]
        total = torch.cat(split) if split else rows.get("weight", rows.get("in_proj_weight"))
        bias = rows.get("bias", rows.get("in_proj_bias"))
        scores[lname] = total if bias is None else total + bias
    return scores


def select(
    name: str,
    model: nn.Module,
    ratio: float = 0.05,
    batch: tuple[Tensor, Tensor] | None = None,
    loss_fn: LossFn = F.cross_entropy,
    seed: int = 0,
    grad: dict[str, Tensor] | None = None,
    fisher: dict[str, Tensor] | None = None,
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
        grad, fisher: the edit gradient g and the empirical Fisher's diagonal F, keyed like
            ``named_parameters()``; needed by ``curvature`` (see :func:`curvature_scores`).
    """
    if name not in SELECTORS:
        raise ValueError(f"selector={name!r} is not one of {', '.join(SELECTORS)}")
    if not 0.0 < ratio <= 1.0:
        raise ValueError(f"ratio must be in (0, 1], got {ratio}")
    gen = torch.Generator().manual_seed(seed)
    mask = {n: torch.zeros_like(p, dtype=torch.bool) for n, p in model.named_parameters()}
    layers = selectable_layers(model)
    scores: dict[str, Tensor] = {}
    skipped: dict[str, str] = {}
    if name == "curvature":
        if grad is None or fisher is None:
            raise ValueError("selector=curvature needs the edit gradient (grad) and the Fisher diagonal (fisher)")
        scores = curvature_scores(model, grad, fisher)
    elif name.endswith(("_outputs", "_gradients")):
        if batch is None:
            raise ValueError(f"selector={name} needs a batch of the data to edit")
        scores, skipped = _unit_scores(model, name.rsplit("_", 1)[1], batch, loss_fn)
        if skipped:
            reasons = "; ".join(f"{n}: {why}" for n, why in skipped.items())
            warnings.warn(f"selector {name} selects nothing in {len(skipped)} layer(s) ({reasons})", stacklevel=2)
    for lname, layer in layers.items():
        prefix = f"{lname}." if lname else ""
        params = block_parameters(layer)
        heads = _head_rows(model, lname, layer)
        descending = name.startswith("highest") or name == "curvature"
        if name == "all":
            layer_masks = {k: torch.ones_like(p, dtype=torch.bool) for k, p in params.items()}
        elif name == "random":
            layer_masks = _random_mask(params, layer_budget(layer, ratio), gen)
        elif lname in skipped:
            continue
        elif heads is not None:
            head_of_row, head_of_score = heads
            layer_masks = _head_mask(
                params, head_of_row, head_of_score, scores[lname], layer_budget(layer, ratio), descending, gen
            )
        else:
            layer_masks = _structured_mask(layer, scores[lname], layer_budget(layer, ratio), descending, gen)
        for key, m in layer_masks.items():
            mask[prefix + key] = m
    return mask
