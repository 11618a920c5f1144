"""Influence-based parameter updates: which linear system each method solves.

Sign convention (the one place it is stated): ``grad`` is the right-hand side
``g = (1/(m−u)) Σ_{i∈U} ∇ℓ(z_i, θ̂)`` (for label change, ``Σ_U [∇ℓ(z_i) − ∇ℓ(z'_i)]``
with the same factor), ``loss`` is the retained-data loss whose Hessian is ``H``, and every
method returns the change Δθ to **add** to θ̂. Removing U is a Newton step on the retained
loss, whose gradient at θ̂ is −g, so the unrestricted update is ``Δθ = +H⁻¹ g``.

===========  ==============================================  ==================
method       Δθ on J                                          Δθ outside J
===========  ==============================================  ==================
``gif``      ``(H_Jᵀ H_J)⁻¹ H_Jᵀ g``                          0
===========  ==============================================  ==================

``H_J`` is the n×k matrix of the columns of H indexed by the mask J; the products it needs
are ``H_J v = H P_J v`` and ``H_Jᵀ u = P_J H u`` (``P_J`` zeroes entries outside J).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor

from . import tree
from .hvp import Loss, hessian_matrix, hvp_fn
from .solvers import SolveInfo, cg, lissa
from .tree import Params

METHODS = ("gif",)
SOLVERS = ("lissa", "cg", "exact")
EXACT_MAX_PARAMS = 20_000  # an explicit n×n Hessian beyond this is too large to be useful


def _full_mask(params: Mapping[str, Tensor]) -> dict[str, Tensor]:
    return {k: torch.ones_like(t, dtype=torch.bool) for k, t in params.items()}


def _gif_iterative(hvp, grad, mask, solver, options) -> tuple[Params, SolveInfo]:
    rhs = tree.project(hvp(grad), mask)  # H_Jᵀ g

    def normal_op(v: Mapping[str, Tensor]) -> Params:  # H_Jᵀ H_J v
        return tree.project(hvp(hvp(tree.project(v, mask))), mask)

    if solver == "lissa":
        x, info = lissa(normal_op, rhs, degree=2, hvps_per_matvec=2, **options)
    else:
        x, info = cg(normal_op, rhs, hvps_per_matvec=2, **options)
    info.hvps += 1
    return tree.project(x, mask), info


def _gif_exact(loss, params, grad, mask) -> tuple[Params, SolveInfo]:
    # Dense least squares in float64 on the CPU (CUDA's lstsq has no rank-revealing driver).
    h = hessian_matrix(loss, params).double().cpu()
    g = tree.flatten(grad).double().cpu()
    cols = tree.flatten(mask).cpu().nonzero().squeeze(1)
    h_j = h[:, cols]
    x_j = torch.linalg.lstsq(h_j, g.unsqueeze(1), driver="gelsd").solution.squeeze(1)
    x = torch.zeros_like(g)
    x[cols] = x_j
    normal_rhs = h_j.T @ g
    res = torch.linalg.vector_norm(normal_rhs - h_j.T @ (h_j @ x_j))
    info = SolveInfo(solver="exact", iterations=1, converged=True)
    info.residual = float(res / torch.linalg.vector_norm(normal_rhs).clamp_min(1e-300))
    first = next(iter(params.values()))
    return tree.unflatten(x.to(device=first.device, dtype=first.dtype), params), info


def solve(
    method: str,
    loss: Loss,
    params: Mapping[str, Tensor],
    grad: Mapping[str, Tensor],
    *,
    mask: Mapping[str, Tensor] | None = None,
    solver: str = "lissa",
    return_info: bool = False,
    **options: Any,
) -> Params | tuple[Params, SolveInfo]:
    """Influence update Δθ of ``method`` (see the module table), zero outside ``mask``.

    Args:
        method: one of :data:`METHODS`.
        loss: ``params -> scalar``, the loss whose Hessian is H (retained training data).
        params: the trained point θ̂.
        grad: the right-hand side g, same keys and shapes as ``params``.
        mask: boolean dict selecting J; ``None`` selects every parameter.
        solver: ``"lissa"`` (:func:`~gif_bench.influence.solvers.lissa`), ``"cg"``
            (:func:`~gif_bench.influence.solvers.cg` on the normal equations), options passed
            on; or ``"exact"`` (explicit Hessian, dense least squares; small models only).
        return_info: also return the :class:`SolveInfo` diagnostics.
    """
    if method not in METHODS:
        raise ValueError(f"method={method!r} is not one of {', '.join(METHODS)}")
    if solver not in SOLVERS:
        raise ValueError(f"solver={solver!r} is not one of {', '.join(SOLVERS)}")
    params = {k: v.detach() for k, v in params.items()}
    grad = {k: grad[k] for k in params}  # every vector in the key order of params
    if mask is None:
        mask = _full_mask(params)
    else:
        mask = {k: mask[k].to(device=params[k].device, dtype=torch.bool) for k in params}
    if solver == "exact":
        n = sum(t.numel() for t in params.values())
        if n > EXACT_MAX_PARAMS:
            raise ValueError(f"solver='exact' builds an n×n Hessian: n={n:,} is over {EXACT_MAX_PARAMS:,}")
        delta, info = _gif_exact(loss, params, grad, mask)
    else:
        hvp = hvp_fn(loss, params, mode=options.pop("hvp", "reverse"))
        delta, info = _gif_iterative(hvp, grad, mask, solver, options)
    return (delta, info) if return_info else delta
