"""Gradients and Hessian-vector products of a loss written as a function of a parameter dict.

``loss`` is any callable ``dict[str, Tensor] -> scalar Tensor`` (typically
``lambda p: F.cross_entropy(torch.func.functional_call(model, p, x), y)`` with the model in
eval mode). Products are taken at a fixed point θ̂ and never keep an autograd graph alive
between calls.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import torch
from torch import Tensor

from .linearize import linearized
from .tree import Params

Loss = Callable[[Mapping[str, Tensor]], Tensor]
HVP = Callable[[Mapping[str, Tensor]], Params]


def _detached(params: Mapping[str, Tensor]) -> Params:
    return {k: v.detach() for k, v in params.items()}


def gradient(loss: Loss, params: Mapping[str, Tensor]) -> Params:
    """∇loss(θ̂) as a dict shaped like ``params``."""
    return torch.func.grad(loss)(_detached(params))


MODES = ("linearize", "reverse", "forward")


def hvp_fn(loss: Loss, params: Mapping[str, Tensor], mode: str = "linearize") -> HVP:
    """Return ``v ↦ H v`` with ``H = ∇²loss(θ̂)``, θ̂ = ``params``.

    ``mode="linearize"`` (default): forward-over-reverse with the primal work done once —
    :func:`~gif_bench.influence.linearize.linearized` ``∇loss`` — so each product costs only
    the tangent pass (see BENCHMARKS.md); it holds the forward and backward activations.
    ``mode="reverse"``: the first-order graph of ``∇loss`` is built once and every product is
    one backward pass through it (reverse-over-reverse). ``mode="forward"``: the JVP of
    ``torch.func.grad``, recomputed from scratch for each product (no state kept).
    """
    primal = _detached(params)
    if mode == "linearize":
        return linearized(torch.func.grad(loss), primal)
    if mode == "forward":
        grad = torch.func.grad(loss)

        def hvp_forward(v: Mapping[str, Tensor]) -> Params:
            return torch.func.jvp(grad, (primal,), (dict(v),))[1]

        return hvp_forward
    if mode != "reverse":
        raise ValueError(f"mode={mode!r} is not one of {', '.join(MODES)}")
    keys = list(primal)
    leaves = [primal[k].clone().requires_grad_(True) for k in keys]
    with torch.enable_grad():
        value = loss(dict(zip(keys, leaves)))
        first = torch.autograd.grad(value, leaves, create_graph=True, allow_unused=True)
    first = [g if g is not None else torch.zeros_like(p) for g, p in zip(first, leaves)]
    live = [i for i, g in enumerate(first) if g.requires_grad]

    def hvp_reverse(v: Mapping[str, Tensor]) -> Params:
        out = [torch.zeros_like(p) for p in leaves]
        if live:
            prods = torch.autograd.grad(
                [first[i] for i in live],
                leaves,
                grad_outputs=[v[keys[i]] for i in live],
                retain_graph=True,
                allow_unused=True,
            )
            out = [o if o is not None else z for o, z in zip(prods, out)]
        return {k: o.detach() for k, o in zip(keys, out)}

    return hvp_reverse


def ggn_fn(
    outputs: Callable[[Mapping[str, Tensor]], Tensor],
    output_loss: Callable[[Tensor], Tensor],
    params: Mapping[str, Tensor],
) -> HVP:
    """Return ``v ↦ G v`` with ``G = J_fᵀ ∇²_z L(z) J_f`` at θ̂, z = f(θ̂): the Gauss–Newton part
    of the Hessian of ``L(f(θ))``.

    ``outputs`` is ``f: params ↦ z`` (typically the logits of a batch), ``output_loss`` is
    ``L: z ↦ scalar``. The Hessian of ``L ∘ f`` is ``G + Σ_k ∂L/∂z_k · ∇²f_k``; G drops the
    second term, the curvature of the network itself. G is positive semi-definite wherever L
    is convex in z (cross-entropy is), and for ``L(z) = CE(z, y) − CE(z, y')`` it is zero,
    since ∇²_z CE(z, y) = diag(p) − p pᵀ does not depend on the label. Each product is one JVP
    of f (which re-runs its forward pass) and one VJP through the pullback kept from θ̂.
    """
    primal = _detached(params)
    z, pullback = torch.func.vjp(outputs, primal)
    z = z.detach()
    output_grad = torch.func.grad(output_loss)

    def ggn(v: Mapping[str, Tensor]) -> Params:
        jv = torch.func.jvp(outputs, (primal,), ({k: v[k] for k in primal},))[1]
        curvature = torch.func.jvp(output_grad, (z,), (jv,))[1]
        return {k: t.detach() for k, t in pullback(curvature)[0].items()}

    return ggn


def hessian_matrix(loss: Loss, params: Mapping[str, Tensor]) -> Tensor:
    """The explicit n×n Hessian of ``loss`` over the flattened ``params`` (small models only)."""
    from .tree import flatten, unflatten

    primal = _detached(params)
    flat = flatten(primal)
    return torch.func.hessian(lambda v: loss(unflatten(v, primal)))(flat)
