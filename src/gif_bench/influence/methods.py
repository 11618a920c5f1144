"""Influence-based parameter updates: which linear system each method solves.

Sign convention (the one place it is stated): ``grad`` is the right-hand side
``g = (1/(m−u)) Σ_{i∈U} ∇ℓ(z_i, θ̂)`` (for label change, ``Σ_U [∇ℓ(z_i) − ∇ℓ(z'_i)]``
with the same factor), ``loss`` is the retained-data loss whose Hessian is ``H``, and every
method returns the change Δθ to **add** to θ̂. Removing U is a Newton step on the retained
loss, whose gradient at θ̂ is −g, so the unrestricted update is ``Δθ = +H⁻¹ g``.

=============  ==========================================  =============================
method         Δθ                                          least-squares form min‖K x − r‖
=============  ==========================================  =============================
``gif``        J: ``(H_Jᵀ H_J)⁻¹ H_Jᵀ g``; elsewhere 0       K = H P_J, r = g
``freezing``   J: ``H_JJ⁻¹ g_J``; elsewhere 0                K = P_J H P_J, r = P_J g
``projecting`` ``P_J H⁻¹ g``                               K = H, r = g, then P_J x
``koh``        ``H⁻¹ g`` (every parameter)                 K = H, r = g
=============  ==========================================  =============================

``H_J`` is the n×k matrix of the columns of H indexed by the mask J; the products it needs
are ``H_J v = H P_J v`` and ``H_Jᵀ u = P_J H u`` (``P_J`` zeroes entries outside J). Every
iterative solver here works on the normal equations ``KᵀK x = Kᵀ r`` (two Hessian-vector
products per iteration), which are positive semi-definite even where H is indefinite, as the
paper's modified LiSSA requires; ``exact`` solves the dense least-squares problem. For
``koh`` with ``solver="lissa"`` the classic LiSSA of Koh & Liang is run instead (see
:func:`~gif_bench.influence.solvers.lissa_classic`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor

from . import tree
from .hvp import Loss, hessian_matrix, hvp_fn
from .solvers import SolveInfo, cg, lissa, lissa_classic
from .tree import Params

METHODS = ("gif", "freezing", "projecting", "koh")
SOLVERS = ("lissa", "cg", "exact")
EXACT_MAX_PARAMS = 20_000  # an explicit n×n Hessian beyond this is too large to be useful


def _full_mask(params: Mapping[str, Tensor]) -> dict[str, Tensor]:
    return {k: torch.ones_like(t, dtype=torch.bool) for k, t in params.items()}


def _normal_equations(method: str, hvp, grad: Params, mask: dict[str, Tensor]):
    """``(v ↦ KᵀK v, Kᵀ r, HVPs spent on Kᵀ r)`` of ``method``'s least-squares form."""

    def p(v):
        return tree.project(v, mask)

    if method == "gif":
        return (lambda v: p(hvp(hvp(p(v))))), p(hvp(grad)), 1
    if method == "freezing":
        return (lambda v: p(hvp(p(hvp(p(v)))))), p(hvp(p(grad))), 1
    return (lambda v: hvp(hvp(v))), hvp(grad), 1  # projecting, koh: K = H


# Options of the modified LiSSA that classic LiSSA has no use for (it never restarts).
_RESTART_OPTIONS = ("mu", "max_restarts", "patience")


def _iterative(method, hvp, grad, mask, solver, options) -> tuple[Params, SolveInfo]:
    if method == "koh" and solver == "lissa":
        return lissa_classic(hvp, grad, **{k: v for k, v in options.items() if k not in _RESTART_OPTIONS})
    normal_op, rhs, rhs_hvps = _normal_equations(method, hvp, grad, mask)
    if solver == "lissa":
        x, info = lissa(normal_op, rhs, degree=2, hvps_per_matvec=2, **options)
    else:
        x, info = cg(normal_op, rhs, hvps_per_matvec=2, **options)
    info.hvps += rhs_hvps
    return (x if method == "koh" else tree.project(x, mask)), info


def _exact(method, loss, params, grad, mask) -> tuple[Params, SolveInfo]:
    # Dense least squares in float64 on the CPU (CUDA's lstsq has no rank-revealing driver).
    h = hessian_matrix(loss, params).double().cpu()
    g = tree.flatten(grad).double().cpu()
    cols = tree.flatten(mask).cpu().nonzero().squeeze(1)
    if method == "gif":
        k, r = h[:, cols], g
    elif method == "freezing":
        k, r = h[cols][:, cols], g[cols]
    else:
        k, r = h, g
    sol = torch.linalg.lstsq(k, r.unsqueeze(1), driver="gelsd").solution.squeeze(1)
    if method in ("gif", "freezing"):
        x = torch.zeros_like(g)
        x[cols] = sol
    elif method == "projecting":
        x = torch.zeros_like(g)
        x[cols] = sol[cols]
    else:
        x = sol
    normal_rhs = k.T @ r
    res = torch.linalg.vector_norm(normal_rhs - k.T @ (k @ sol))
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
    """Influence update Δθ of ``method`` (see the module table); ``koh`` ignores ``mask``.

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
        delta, info = _exact(method, loss, params, grad, mask)
    else:
        hvp = hvp_fn(loss, params, mode=options.pop("hvp", "reverse"))
        delta, info = _iterative(method, hvp, grad, mask, solver, options)
    return (delta, info) if return_info else delta
