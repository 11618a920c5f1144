"""Hessian products restricted to a mask of whole output units, at the cost of the units used.

GIF needs ``H_J v = H P_J v`` and ``H_Jᵀ u = P_J H u``; freezing needs ``P_J H P_J v``. A plain
Hessian-vector product pays for every parameter on both sides. When J consists of (parts of)
the output units of convolution and linear layers — what every selector returns — the unused
side can be skipped: write each selected layer's output as

    y = layer(x; W) + S_R · layer(x; δ_R),    δ_R = 0,

where R are the layer's units touched by J, ``δ_R`` holds their rows of W (and entries of
the bias) and S_R scatters R's outputs into place. At δ = 0 this is the same function, and

    ∂²loss/∂θ∂δ · v_R = H P_R v,    ∂²loss/∂δ∂θ · u = P_R H u,    ∂²loss/∂δ² · v_R = P_R H P_R v,

so a product that enters (or leaves) through δ only runs the layer's convolutions for the
rows in R on that side. Each product is the linearization
(:func:`~gif_bench.influence.linearize.linearized`) of a gradient: the forward and first
backward pass run once, and the tangent terms multiplied by δ's zero value are pruned.

A :class:`~gif_bench.influence.fold.FoldedConv` (BatchNorm folded in) is handled too: its
output is ``s ⊙ conv(x; W) + c`` with s = γ/σ per unit, so the extra term becomes
``S_R · layer(x; s_R·δ_R)``, with s read from the parameters the loss is evaluated at.

The extra term is injected with forward hooks that exist only while the products are traced;
``loss`` must evaluate ``model`` (for example through ``torch.func.functional_call``).

δ enters only through the modules, so a term of ``loss`` that uses θ outside them — a weight
penalty ``½λ‖θ‖²``, a weight tied into another layer through ``F.linear`` — is invisible to it:
with ``loss = CE + ½λ‖θ‖²`` the products would give ``H P_J v − λ P_J v``. Such terms are
detected when the first product is traced, by their first derivative: for a loss made of the
modules only, ``∂loss/∂δ`` at δ = 0 equals the R rows of ``∇_θ loss`` (both are the gradient
of the same function in the same weights), so a gap between them (relative, beyond
:func:`gradient_tolerance`) declines with :class:`RestrictedUnavailable`. One gradient, once.
A term whose gradient on R vanishes at θ̂ while its Hessian does not escapes the check.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .fold import FoldedConv
from .hvp import HVP, Loss, math_attention, missing_derivative
from .linearize import linearized
from .tree import Params

# Above this share of the parameters in the touched units a split saves too little to pay
# for its extra convolutions (the ``random`` selector touches nearly every unit).
MAX_TOUCHED_FRACTION = 0.5

_CONV = {nn.Conv1d: F.conv1d, nn.Conv2d: F.conv2d, nn.Conv3d: F.conv3d}


class RestrictedUnavailable(ValueError):
    """The restricted products cannot be formed for this loss: a layer J touches is not run
    through its module, the loss has terms that use the touched weights outside the modules
    (a weight penalty), or an operator lacks a forward-mode derivative even with the math
    attention kernel. Plain products (:func:`~gif_bench.influence.hvp.hvp_fn`) still work."""


def gradient_tolerance(like: Tensor) -> float:
    """The relative gap ``‖∂loss/∂δ − (∇_θ loss)_R‖ / max(‖∂loss/∂δ‖, ‖(∇_θ loss)_R‖)`` (norms
    over every touched layer at once) above which the loss is taken to have terms outside the
    modules: ``ε^{1/3}`` for the machine epsilon ε of the arithmetic the gradients of tensors
    like ``like`` are computed in (6.1e-6 in float64, 4.9e-3 in float32, 0.099 where CUDA
    float32 matmuls or convolutions run in TF32, 0.2 in bfloat16).

    Far above rounding on purpose: the two gradients come from differently shaped kernels (the
    module's full weight gradient, and one of the R rows only), each is a sum over the batch that
    cancels a lot at a trained θ̂, and a false alarm only costs speed, while the terms this is
    for are not small there — at a minimum of ``CE + ½λ‖θ‖²`` the gap ``λθ_R`` is about as
    large as ``∂loss/∂δ`` itself.
    """
    eps = torch.finfo(like.dtype).eps
    if like.dtype == torch.float32 and like.is_cuda:
        if torch.get_float32_matmul_precision() == "medium":  # bfloat16 matmuls
            eps = max(eps, torch.finfo(torch.bfloat16).eps)
        elif torch.backends.cuda.matmul.allow_tf32 or torch.backends.cudnn.allow_tf32:
            eps = max(eps, 2.0**-10)  # TF32 keeps 10 mantissa bits
    return eps ** (1 / 3)


@dataclass(frozen=True)
class MaskedHVPs:
    """The three restricted products of one mask J at one point θ̂ (see the module docstring)."""

    columns: HVP  # v ↦ H P_J v       (every parameter out)
    rows: HVP  # u ↦ P_J H u          (J out, zero elsewhere)
    block: HVP  # v ↦ P_J H P_J v     (J out, zero elsewhere)
    forms: set[str] = field(default_factory=set)  # how the products traced so far were formed


def _unit_layers(model: nn.Module) -> dict[str, nn.Module]:
    return {
        name: m
        for name, m in model.named_modules()
        if isinstance(m, nn.Linear)
        or (
            (type(m) in _CONV or isinstance(m, FoldedConv))
            and m.groups == 1
            and m.padding_mode == "zeros"
            and isinstance(m.padding, tuple)
        )
    }


def _touched_units(model: nn.Module, params: Mapping[str, Tensor], mask: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Layer name → indices R of the output units with any selected weight or bias, or {} if J
    also selects parameters outside convolution / linear layers."""
    layers = _unit_layers(model)
    units: dict[str, Tensor] = {}
    covered = set()
    for name, layer in layers.items():
        keys = [f"{name}.{attr}" for attr in ("weight", "bias") if getattr(layer, attr) is not None]
        keys = [k for k in keys if k in params]
        covered.update(keys)
        touched = torch.zeros(layer.weight.shape[0], dtype=torch.bool, device=layer.weight.device)
        for k in keys:
            touched |= mask[k].reshape(mask[k].shape[0], -1).any(1)
        if touched.any():
            units[name] = touched.nonzero().squeeze(1)
    if any(bool(mask[k].any()) for k in params if k not in covered):
        return {}
    return units


def _delta_keys(params: Mapping[str, Tensor], units: Mapping[str, Tensor]) -> dict[str, tuple[str, Tensor]]:
    """δ key (== the parameter's key) → (layer name, unit indices)."""
    return {k: (name, rows) for name, rows in units.items() for k in (f"{name}.weight", f"{name}.bias") if k in params}


@contextmanager
def _unit_offsets(model: nn.Module, units: Mapping[str, Tensor], current: dict[str, Tensor]) -> Iterator[set[str]]:
    """Hooks adding ``S_R · layer(x; δ_R)`` to each layer's output, δ read from ``current``."""
    layers = dict(model.named_modules())
    called: set[str] = set()

    def hook_for(name: str, rows: Tensor):
        layer = layers[name]

        def hook(_module: nn.Module, inputs: tuple[Tensor, ...], out: Tensor) -> Tensor:
            weight, bias = current.get(f"{name}.weight"), current.get(f"{name}.bias")
            if weight is None and bias is None:
                return out
            called.add(name)
            if weight is None:
                weight = torch.zeros((len(rows), *layer.weight.shape[1:]), dtype=out.dtype, device=out.device)
            if isinstance(layer, nn.Linear):
                return out.index_add(-1, rows, F.linear(inputs[0], weight, bias))
            if isinstance(layer, FoldedConv):  # BN(y + S_R·e) = BN(y) + S_R·(s_R·e): scale the rows
                scale = layer.unit_scale().index_select(0, rows)
                weight = weight * scale.reshape(-1, *[1] * (weight.dim() - 1))
                bias = None if bias is None else bias * scale
                conv = layer.conv_fn
            else:
                conv = _CONV[type(layer)]
            extra = conv(inputs[0], weight, bias, layer.stride, layer.padding, layer.dilation)
            return out.index_add(1, rows, extra)

        return hook

    handles = [layers[name].register_forward_hook(hook_for(name, rows)) for name, rows in units.items()]
    try:
        yield called
    finally:
        for h in handles:
            h.remove()


def masked_hvps(
    loss: Loss, params: Mapping[str, Tensor], mask: Mapping[str, Tensor], model: nn.Module
) -> MaskedHVPs | None:
    """Build the restricted products of ``mask`` at ``params``, or ``None`` where they do not pay.

    ``None`` when J selects a parameter outside a (groups=1, zero-padded) convolution or
    linear layer of ``model``, or when the units J touches hold more than
    :data:`MAX_TOUCHED_FRACTION` of the parameters; use plain products
    (:func:`~gif_bench.influence.hvp.hvp_fn`) then. A product raises
    :class:`RestrictedUnavailable` (a ``ValueError``) if ``loss`` does not run a layer J touches
    through its module — ``nn.MultiheadAttention`` never calls its ``out_proj``, for example —
    or uses the weights of the touched units outside the modules (a weight penalty
    ``½λ‖θ‖²``: the module docstring's gradient check, one extra gradient on the first trace).
    """
    primal = {k: v.detach() for k, v in params.items()}
    units = _touched_units(model, primal, mask)
    if not units:
        return None
    keys = _delta_keys(primal, units)
    touched = sum(len(rows) * primal[k][0].numel() for k, (_, rows) in keys.items())
    if touched > MAX_TOUCHED_FRACTION * sum(t.numel() for t in primal.values()):
        return None
    zero = {k: primal[k].new_zeros((len(rows), *primal[k].shape[1:])) for k, (_, rows) in keys.items()}
    current: dict[str, Tensor] = {}

    def split_loss(theta: Params, delta: Params) -> Tensor:
        current.clear()
        current.update(delta)
        try:
            return loss(theta)
        finally:
            current.clear()

    forms: set[str] = set()
    checked: list[bool] = []  # the gradient check ran (and passed): once for all three products

    def check_gradients() -> None:
        """Decline if ``∂loss/∂δ`` at δ = 0 is not the R rows of ``∇_θ loss`` (module docstring)."""
        theta, delta = torch.func.grad(split_loss, argnums=(0, 1))(primal, zero)
        through_delta = torch.cat([delta[k].flatten() for k in keys])
        plain = torch.cat([theta[k].index_select(0, rows).flatten() for k, (_, rows) in keys.items()])
        gap = float(torch.linalg.vector_norm(through_delta - plain))
        scale = max(float(torch.linalg.vector_norm(through_delta)), float(torch.linalg.vector_norm(plain)))
        relative = gap / scale if scale > 0 else gap  # both zero: no gap
        tolerance = gradient_tolerance(next(iter(zero.values())))
        if not relative <= tolerance:  # also a NaN gap
            raise RestrictedUnavailable(
                "loss has terms that use the selected units' weights outside the model's modules (a weight "
                f"penalty, a tied weight): ∂loss/∂δ differs from their rows of ∇loss by {relative:.2g} "
                f"(relative, over the tolerance {tolerance:.2g})"
            )
        checked.append(True)

    def trace(fn: Callable[[Params], Params], at: Params, math: bool) -> HVP:
        with math_attention() if math else nullcontext(), _unit_offsets(model, units, current) as called:
            product = linearized(fn, at)
            missing = sorted(set(units) - called)
            if missing:
                raise RestrictedUnavailable(
                    f"loss never runs the layer(s) {', '.join(missing)} of the model it was given through the module"
                )
            if not checked:
                check_gradients()
        forms.add("restricted linearize, math attention" if math else "restricted linearize")
        return product

    def traced(fn: Callable[[Params], Params], at: Params) -> HVP:
        """The linearization of ``fn`` at ``at``, traced on first use (with the hooks on), with
        the math attention kernel where the default kernel has no forward-mode derivative."""
        cache: list[HVP] = []

        def product(v: Mapping[str, Tensor]) -> Params:
            if not cache:
                try:
                    cache.append(trace(fn, at, math=False))
                except (NotImplementedError, RuntimeError) as err:
                    if not missing_derivative(err):
                        raise
                    try:
                        cache.append(trace(fn, at, math=True))
                    except (NotImplementedError, RuntimeError) as again:
                        if not missing_derivative(again):
                            raise
                        raise RestrictedUnavailable(f"no forward-mode derivative: {again}") from again
            return cache[0](v)

        return product

    columns = traced(lambda d: torch.func.grad(split_loss, argnums=0)(primal, d), zero)
    rows_fn = traced(lambda t: torch.func.grad(split_loss, argnums=1)(t, zero), primal)
    block_fn = traced(lambda d: torch.func.grad(split_loss, argnums=1)(primal, d), zero)

    def restrict(v: Mapping[str, Tensor]) -> Params:  # P_J v, as the δ-shaped rows R
        return {k: torch.where(mask[k], v[k], 0.0).index_select(0, rows) for k, (_, rows) in keys.items()}

    def expand(d: Mapping[str, Tensor]) -> Params:
        out = {k: torch.zeros_like(t) for k, t in primal.items()}
        for k, (_, rows) in keys.items():
            out[k].index_copy_(0, rows, d[k])
        return {k: torch.where(mask[k], out[k], 0.0) for k in out}

    def columns_product(v: Mapping[str, Tensor]) -> Params:
        return columns(restrict(v))

    def rows_product(u: Mapping[str, Tensor]) -> Params:
        return expand(rows_fn(dict(u)))

    def block_product(v: Mapping[str, Tensor]) -> Params:
        return expand(block_fn(restrict(v)))

    return MaskedHVPs(columns_product, rows_product, block_product, forms)
