"""Gradients and Hessian-vector products of a loss written as a function of a parameter dict.

``loss`` is any callable ``dict[str, Tensor] -> scalar Tensor`` (typically
``lambda p: F.cross_entropy(torch.func.functional_call(model, p, x), y)`` with the model in
eval mode). Products are taken at a fixed point θ̂ and never keep an autograd graph alive
between calls.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager, nullcontext

import torch
from torch import Tensor
from torch.nn.attention import SDPBackend, sdpa_kernel

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


def missing_derivative(err: BaseException) -> bool:
    """Whether ``err`` says an operator lacks the derivative a product needs (forward AD, or a
    double backward): PyTorch's fused attention kernels, for example, have neither."""
    return isinstance(err, NotImplementedError) or (
        isinstance(err, RuntimeError) and "not implemented" in str(err) and "derivative" in str(err)
    )


@contextmanager
def math_attention() -> Iterator[None]:
    """Run ``F.scaled_dot_product_attention`` with the plain math kernel, and
    ``nn.MultiheadAttention`` / ``nn.TransformerEncoderLayer`` without their fused inference
    path: plain operations, all with forward-mode and second-order derivatives."""
    fastpath = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        with sdpa_kernel(SDPBackend.MATH):
            yield
    finally:
        torch.backends.mha.set_fastpath_enabled(fastpath)


def _form(mode: str, math: bool) -> str:
    return f"{mode}, math attention" if math else mode


class FallbackProduct:
    """A product ``v ↦ A v`` built by the first of several forms that works on this function.

    Forms are tried in order on the first call: as built, then with the math attention kernel
    (:func:`math_attention`), then (where the form was not already reverse mode) reverse mode
    with the math kernel. Only a missing derivative (:func:`missing_derivative`) moves on to
    the next form; any other error is raised. ``form`` names the form in use (``None`` before
    the first call), e.g. ``"linearize"`` or ``"reverse, math attention"``.
    """

    def __init__(self, build: Callable[[str], HVP], mode: str) -> None:
        self._build, self._mode = build, mode
        self._product: HVP | None = None
        self._math = False
        self.form: str | None = None

    def _candidates(self) -> list[tuple[str, bool]]:
        forms = [(self._mode, False), (self._mode, True)]
        return forms if self._mode == "reverse" else [*forms, ("reverse", True)]

    def __call__(self, v: Mapping[str, Tensor]) -> Params:
        if self._product is not None:
            with math_attention() if self._math else nullcontext():
                return self._product(v)
        error: BaseException | None = None
        for mode, math in self._candidates():
            try:
                with math_attention() if math else nullcontext():
                    product = self._build(mode)
                    out = product(v)
            except (NotImplementedError, RuntimeError) as err:
                if not missing_derivative(err):
                    raise
                error = err
                continue
            self._product, self._math, self.form = product, math, _form(mode, math)
            return out
        raise error  # type: ignore[misc]


def _build_hvp(loss: Loss, primal: Params, mode: str) -> HVP:
    if mode == "linearize":
        return linearized(torch.func.grad(loss), primal)
    if mode == "forward":
        grad = torch.func.grad(loss)

        def hvp_forward(v: Mapping[str, Tensor]) -> Params:
            return torch.func.jvp(grad, (primal,), (dict(v),))[1]

        return hvp_forward
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


def hvp_fn(loss: Loss, params: Mapping[str, Tensor], mode: str = "linearize") -> FallbackProduct:
    """Return ``v ↦ H v`` with ``H = ∇²loss(θ̂)``, θ̂ = ``params``.

    ``mode="linearize"`` (default): forward-over-reverse with the primal work done once —
    :func:`~gif_bench.influence.linearize.linearized` ``∇loss`` — so each product costs only
    the tangent pass (see BENCHMARKS.md); it holds the forward and backward activations.
    ``mode="reverse"``: the first-order graph of ``∇loss`` is built once and every product is
    one backward pass through it (reverse-over-reverse). ``mode="forward"``: the JVP of
    ``torch.func.grad``, recomputed from scratch for each product (no state kept).

    The product is built on its first call. Where an operator of ``loss`` lacks the derivative
    the mode needs (PyTorch's fused attention kernels have no forward-mode derivative and no
    double backward), it falls back as :class:`FallbackProduct` describes — the same H, formed
    another way — and says which form ran in its ``form`` attribute.
    """
    if mode not in MODES:
        raise ValueError(f"mode={mode!r} is not one of {', '.join(MODES)}")
    primal = _detached(params)
    return FallbackProduct(lambda m: _build_hvp(loss, primal, m), mode)


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
    of f (which re-runs its forward pass) and one VJP through the pullback kept from θ̂; where
    f has no forward-mode derivative it falls back as :func:`hvp_fn` does.
    """
    primal = _detached(params)

    def build(mode: str) -> HVP:
        z, pullback = torch.func.vjp(outputs, primal)
        z = z.detach()
        output_grad = torch.func.grad(output_loss)
        if mode == "forward":

            def jacobian_product(v: Params) -> Tensor:
                return torch.func.jvp(outputs, (primal,), (v,))[1]

        else:  # J v as the VJP of the (linear) pullback u ↦ Jᵀu: reverse mode only

            def jacobian_product(v: Params) -> Tensor:
                return torch.func.vjp(lambda u: pullback(u)[0], torch.zeros_like(z))[1](v)[0]

        def ggn(v: Mapping[str, Tensor]) -> Params:
            jv = jacobian_product({k: v[k] for k in primal})
            curvature = torch.func.jvp(output_grad, (z,), (jv,))[1]
            return {k: t.detach() for k, t in pullback(curvature)[0].items()}

        return ggn

    return FallbackProduct(build, "forward")


def hessian_matrix(loss: Loss, params: Mapping[str, Tensor]) -> Tensor:
    """The explicit n×n Hessian of ``loss`` over the flattened ``params`` (small models only)."""
    from .tree import flatten, unflatten

    primal = _detached(params)
    flat = flatten(primal)
    with math_attention():
        return torch.func.hessian(lambda v: loss(unflatten(v, primal)))(flat)
