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
paper's modified LiSSA requires, except ``lsqr``, which works with K and Kᵀ directly, and
``minres``, which solves ``K x = r`` itself where K is symmetric (one product per iteration,
valid for indefinite H); ``exact`` solves the dense least-squares problem. For
``koh`` with ``solver="lissa"`` (or ``"authors"``) the classic LiSSA of Koh & Liang is run
instead (see :func:`~gif_bench.influence.solvers.lissa_classic`). ``damping`` λ (every solver but
``minres``) gives the Tikhonov-regularised ``(KᵀK + λI)⁻¹ Kᵀ r`` of each method's K and r: for
``gif`` ``(H_JᵀH_J + λI)⁻¹ H_Jᵀ g``, for ``freezing`` ``(H_JJ² + λI)⁻¹ H_JJ g_J``.

The paper's tables ran the modified LiSSA truncated (``solver="authors"``): a regularised
direction, the Landweber filter ``1 − (1 − c σ)^{N+1}`` on each eigenvalue σ of KᵀK, not the
least-squares solution above; its "IF" row is ``gif`` with J = every Conv/Linear parameter.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import torch
from torch import Tensor, nn

from . import tree
from .hvp import HVP, FallbackProduct, Loss, hessian_matrix, hvp_fn
from .masked import RestrictedUnavailable, masked_hvps
from .solvers import SolveInfo, cg, jacobi_normal_diagonal, lissa, lissa_classic, lsqr, minres, tikhonov_augmented
from .tree import Params

EXACT_MAX_PARAMS = 20_000  # an explicit n×n Hessian beyond this is too large to be useful


def _full_mask(params: Mapping[str, Tensor]) -> dict[str, Tensor]:
    return {k: torch.ones_like(t, dtype=torch.bool) for k, t in params.items()}


class HessianProducts:
    """H and its mask-restricted forms; each built on first use (building one traces a graph).

    The restricted products of :func:`~gif_bench.influence.masked.masked_hvps` are used where
    they apply; where they turn out not to (a layer not run through its module, an operator
    without a forward-mode derivative) the plain products take over, with the reason kept in
    :meth:`form`.
    """

    def __init__(self, loss: Loss, params: Params, mask: dict[str, Tensor], mode: str, model: nn.Module | None):
        self._loss, self._params, self._mode, self.mask = loss, params, mode, mask
        self._full: FallbackProduct | None = None
        self._masked = masked_hvps(loss, params, mask, model) if model is not None and mode == "linearize" else None
        self._declined: str | None = None

    def form(self) -> str:
        """How the products were formed, e.g. ``"restricted linearize"`` or ``"linearize, math
        attention (restricted products declined: …)"``."""
        forms = sorted(self._masked.forms) if self._masked else []
        if self._full is not None and self._full.form:
            forms.append(self._full.form)
        text = " + ".join(forms)
        return f"{text} (restricted products declined: {self._declined})" if self._declined else text

    def p(self, v: Mapping[str, Tensor]) -> Params:
        return tree.project(v, self.mask)

    def h(self, v: Mapping[str, Tensor]) -> Params:
        if self._full is None:
            self._full = hvp_fn(self._loss, self._params, mode=self._mode)
        return self._full(v)

    def _restricted(self, which: str, v: Mapping[str, Tensor]) -> Params | None:
        if self._masked is None:
            return None
        try:
            return getattr(self._masked, which)(v)
        except RestrictedUnavailable as err:
            self._masked, self._declined = None, str(err)
            return None

    def columns(self, v: Mapping[str, Tensor]) -> Params:  # H P_J v
        out = self._restricted("columns", v)
        return out if out is not None else self.h(self.p(v))

    def rows(self, u: Mapping[str, Tensor]) -> Params:  # P_J H u
        out = self._restricted("rows", u)
        return out if out is not None else self.p(self.h(u))

    def block(self, v: Mapping[str, Tensor]) -> Params:  # P_J H P_J v
        out = self._restricted("block", v)
        return out if out is not None else self.p(self.h(self.p(v)))


Operator = Callable[[Mapping[str, Tensor]], Params]


@dataclass(frozen=True)
class LinearMethod:
    """A method whose Δθ is the least-squares solution of ``min‖K x − r‖`` (the module table).

    ``system(products, g)`` gives ``(v ↦ K v, u ↦ Kᵀ u, r)`` from the products of H (one HVP
    each); ``dense(H, g, cols)`` the same K and r as explicit matrices (``cols``: J's flat
    indices) and ``place(sol, cols, g)`` the dense solution as the flat Δθ. ``masked``: Δθ is
    kept on J (``P_J x``); ``restricted``: K only needs the products of
    :func:`~gif_bench.influence.masked.masked_hvps`; ``classic_lissa``: K = H, and
    ``solver="lissa"`` runs Koh & Liang's LiSSA on H itself instead of the normal equations;
    ``symmetric``: K is symmetric (and r in its row space's ambient space), so ``solver="minres"``
    can solve ``K x = r`` directly.
    """

    system: Callable[[HessianProducts, Params], tuple[Operator, Operator, Params]]
    dense: Callable[[Tensor, Tensor, Tensor], tuple[Tensor, Tensor]]
    place: Callable[[Tensor, Tensor, Tensor], Tensor]
    masked: bool = True
    restricted: bool = False
    classic_lissa: bool = False
    symmetric: bool = False


def _on_j(sol: Tensor, cols: Tensor, g: Tensor) -> Tensor:  # the solution holds J's entries only
    x = torch.zeros_like(g)
    x[cols] = sol
    return x


def _projected(sol: Tensor, cols: Tensor, g: Tensor) -> Tensor:  # the full solution, kept on J
    x = torch.zeros_like(g)
    x[cols] = sol[cols]
    return x


GIF = LinearMethod(
    system=lambda k, g: (k.columns, k.rows, g),
    dense=lambda h, g, cols: (h[:, cols], g),
    place=_on_j,
    restricted=True,
)
FREEZING = LinearMethod(
    system=lambda k, g: (k.block, k.block, k.p(g)),  # K is symmetric: one function serves both
    dense=lambda h, g, cols: (h[cols][:, cols], g[cols]),
    place=_on_j,
    restricted=True,
    symmetric=True,
)
PROJECTING = LinearMethod(
    system=lambda k, g: (k.h, k.h, g),
    dense=lambda h, g, cols: (h, g),
    place=_projected,
    symmetric=True,
)
KOH = LinearMethod(
    system=lambda k, g: (k.h, k.h, g),
    dense=lambda h, g, cols: (h, g),
    place=lambda sol, cols, g: sol,
    masked=False,
    classic_lissa=True,
    symmetric=True,
)
LINEAR_METHODS: dict[str, LinearMethod] = {"gif": GIF, "freezing": FREEZING, "projecting": PROJECTING, "koh": KOH}

# Options of the modified LiSSA that classic LiSSA has no use for (it never restarts, and stops
# on its own rule).
_RESTART_OPTIONS = ("mu", "growth", "max_restarts", "patience", "stop", "divergence")


def _normal_equations(system) -> tuple[Operator, Params]:
    op, op_t, r = system
    return (lambda v: op_t(op(v))), op_t(r)


@dataclass
class System:
    """What a :class:`Solver` sees: the loss whose Hessian is H, θ̂, g, the mask J and the
    products of H (``None`` for a solver that forms H itself)."""

    loss: Loss
    params: Params
    grad: Params
    mask: dict[str, Tensor]
    products: HessianProducts | None


@dataclass(frozen=True)
class Solver:
    """A solver of a :class:`LinearMethod`'s least-squares problem with its options bound:
    ``solver(method, system) -> (x, info)``; ``x`` before the method's ``P_J``.

    ``SOLVERS["cg"].bind(tol=1e-3, max_iter=200)`` is conjugate gradients with those options;
    ``solve_linear`` accepts a name (and options) or a :class:`Solver`.
    """

    name: str
    run: Callable[..., tuple[Params, SolveInfo]]
    options: Mapping[str, Any] = field(default_factory=dict)
    uses_products: bool = True  # False: it forms H itself (``exact``)
    lissa: bool = False  # a LiSSA: a ``classic_lissa`` method runs Koh & Liang's LiSSA with it

    def __call__(self, method: LinearMethod, system: System) -> tuple[Params, SolveInfo]:
        return self.run(method, system, **self.options)

    def bind(self, **options: Any) -> Solver:
        """This solver with ``options`` added to (or replacing) its own."""
        return replace(self, options={**self.options, **options})


def _unknowns(method: LinearMethod, system: System) -> int:
    """|J| of the normal equations' unknowns: J for a restricted system, every parameter else."""
    support = _support(method, system)
    return tree.count(support) if support is not None else sum(t.numel() for t in system.params.values())


def _by_lissa(method: LinearMethod, system: System, **options) -> tuple[Params, SolveInfo]:
    """The modified LiSSA on ``(KᵀK + λI) x = Kᵀ r`` (``damping`` λ, default 0), or Koh &
    Liang's classic LiSSA on H for a ``classic_lissa`` method (whose ``damping`` is its own)."""
    k, grad = system.products, system.grad
    if method.classic_lissa:
        return lissa_classic(k.h, grad, **{key: v for key, v in options.items() if key not in _RESTART_OPTIONS})
    normal_op, rhs = _normal_equations(method.system(k, grad))
    x, info = lissa(normal_op, rhs, degree=2, hvps_per_matvec=2, unknowns=_unknowns(method, system), **options)
    info.hvps += 1  # Kᵀ r
    return x, info


PRECONDITIONERS = (None, "jacobi")  # of CG on the normal equations


def _support(method: LinearMethod, system: System) -> dict[str, Tensor] | None:
    """Where the unknowns of the method's normal equations can be nonzero: J for a restricted system."""
    return system.mask if method.restricted else None


def _by_cg(
    method: LinearMethod,
    system: System,
    *,
    preconditioner: str | None = None,
    probes: int = 10,
    probe_seed: int = 0,
    **options,
) -> tuple[Params, SolveInfo]:
    """CG on ``KᵀK x = Kᵀ r``; ``preconditioner="jacobi"``: preconditioned by the inverse of a
    ``probes``-sample estimate of ``diag(KᵀK)`` (:func:`~.solvers.jacobi_normal_diagonal`, one
    product each, counted)."""
    if preconditioner not in PRECONDITIONERS:
        raise ValueError(f"preconditioner={preconditioner!r} is not one of {PRECONDITIONERS}")
    system_k = method.system(system.products, system.grad)
    normal_op, rhs = _normal_equations(system_k)
    inverse_diagonal = None
    if preconditioner == "jacobi":
        generator = torch.Generator().manual_seed(int(probe_seed))
        inverse_diagonal = jacobi_normal_diagonal(system_k[1], system.grad, int(probes), generator)
    support = _support(method, system)
    x, info = cg(normal_op, rhs, hvps_per_matvec=2, inverse_diagonal=inverse_diagonal, support=support, **options)
    # with damping λ, CG solves (KᵀK + λI) x = Kᵀ r; a Jacobi diagonal of KᵀK alone still serves
    info.hvps += 1 + (int(probes) if inverse_diagonal is not None else 0)  # Kᵀ r, and the probes
    if inverse_diagonal is not None:
        info.solver = info.solver.replace("cg", "cg+jacobi", 1)
    return x, info


def _by_minres(method: LinearMethod, system: System, *, damping: float = 0.0, **options) -> tuple[Params, SolveInfo]:
    if not method.symmetric:
        raise ValueError("solver='minres' needs a symmetric system (koh, projecting, freezing); use cg or lsqr")
    if damping:  # K x = r has no Tikhonov form of the normal equations' (KᵀK + λI)
        raise ValueError("solver='minres' solves K x = r itself and takes no damping; use cg, lsqr, lissa or exact")
    op, _, rhs = method.system(system.products, system.grad)
    return minres(op, rhs, support=_support(method, system), **options)


def _by_lsqr(method: LinearMethod, system: System, *, damping: float = 0.0, **options) -> tuple[Params, SolveInfo]:
    """LSQR on ``min ‖K x − r‖² + λ‖x‖²`` (``damping`` λ): on ``[K; √λ I]`` and ``[r; 0]``."""
    if damping < 0:
        raise ValueError(f"damping must be >= 0, got {damping}")
    op, op_t, rhs = method.system(system.products, system.grad)
    if damping:
        op, op_t, rhs = tikhonov_augmented(op, op_t, rhs, damping)
    return lsqr(op, op_t, rhs, support=_support(method, system), **options)


def _exact(method: LinearMethod, system: System, *, damping: float = 0.0, **options) -> tuple[Params, SolveInfo]:
    """Dense least squares in float64 on the CPU (CUDA's lstsq has no rank-revealing driver):
    ``min ‖K x − r‖² + λ‖x‖²`` for ``damping`` λ, as ``[K; √λ I] x ≈ [r; 0]``."""
    if damping < 0:
        raise ValueError(f"damping must be >= 0, got {damping}")
    params = system.params
    n = sum(t.numel() for t in params.values())
    if n > EXACT_MAX_PARAMS:
        raise ValueError(f"solver='exact' builds an n×n Hessian: n={n:,} is over {EXACT_MAX_PARAMS:,}")
    h = hessian_matrix(system.loss, params).double().cpu()
    g = tree.flatten(system.grad).double().cpu()
    cols = tree.flatten(system.mask).cpu().nonzero().squeeze(1)
    k, r = method.dense(h, g, cols)
    k_aug, r_aug = k, r
    if damping:
        k_aug = torch.cat([k, float(damping) ** 0.5 * torch.eye(k.shape[1], dtype=k.dtype)])
        r_aug = torch.cat([r, torch.zeros(k.shape[1], dtype=r.dtype)])
    sol = torch.linalg.lstsq(k_aug, r_aug.unsqueeze(1), driver="gelsd").solution.squeeze(1)
    x = method.place(sol, cols, g)
    normal_rhs = k.T @ r
    res = torch.linalg.vector_norm(normal_rhs - k.T @ (k @ sol) - float(damping) * sol)
    info = SolveInfo(solver="exact", iterations=1, converged=True, hvp="explicit Hessian")
    info.residual = float(res / torch.linalg.vector_norm(normal_rhs).clamp_min(1e-300))
    first = next(iter(params.values()))
    return tree.unflatten(x.to(device=first.device, dtype=first.dtype), params), info


# The series the paper's tables were computed with (the authors' research code): the modified
# LiSSA from the loss divisor M = 1, M += ``mu`` on their even-step divergence rule, their stop
# on successive differences, ``max_iter`` = N products for N + 1 terms (Table 1's N and step
# here; Table 2 ran mu=3, max_iter=30 and Table 3 mu=5, max_iter=1000).
AUTHORS_SERIES: dict[str, Any] = dict(
    scale=1.0, growth="add", mu=7.0, max_iter=200, tol=1e-9, stop="difference", divergence="even_step",
    max_restarts=1000,
)  # fmt: skip

# The solvers by name: the modified LiSSA (as the paper writes it, and as its tables ran it), CG,
# LSQR and MINRES on H's products, and dense least squares.
SOLVERS: dict[str, Solver] = {
    "lissa": Solver("lissa", _by_lissa, lissa=True),
    "authors": Solver("authors", _by_lissa, AUTHORS_SERIES, lissa=True),
    "cg": Solver("cg", _by_cg),
    "lsqr": Solver("lsqr", _by_lsqr),
    "minres": Solver("minres", _by_minres),
    "exact": Solver("exact", _exact, uses_products=False),
}


def _solver(solver: str | Solver, options: Mapping[str, Any]) -> Solver:
    if isinstance(solver, Solver):
        return solver.bind(**options)
    if solver not in SOLVERS:
        raise ValueError(f"solver={solver!r} is not one of {', '.join(SOLVERS)}")
    return SOLVERS[solver].bind(**options)


def solve(
    method: str,
    loss: Loss,
    params: Mapping[str, Tensor],
    grad: Mapping[str, Tensor],
    *,
    return_info: bool = False,
    **kwargs: Any,
) -> Params | tuple[Params, SolveInfo]:
    """Influence update Δθ of ``method``: ``METHODS[method](loss, params, grad, **kwargs)``.

    ``gif``, ``freezing``, ``projecting`` and ``koh`` take the arguments of
    :func:`solve_linear`; ``second_order`` those of :func:`second_order` with ``grad`` its
    ``removed_grad`` (and ``removed_loss`` or ``removed_hvp``, ``m``, ``u`` as keywords).
    ``return_info``: also return the :class:`SolveInfo` diagnostics.
    """
    if method not in METHODS:
        raise ValueError(f"method={method!r} is not one of {', '.join(METHODS)}")
    delta, info = METHODS[method](loss, params, grad, **kwargs)
    return (delta, info) if return_info else delta


def solve_linear(
    method: str | LinearMethod,
    loss: Loss,
    params: Mapping[str, Tensor],
    grad: Mapping[str, Tensor],
    *,
    mask: Mapping[str, Tensor] | None = None,
    solver: str | Solver = "lissa",
    model: nn.Module | None = None,
    hvp: str = "linearize",
    **options: Any,
) -> tuple[Params, SolveInfo]:
    """``(Δθ, diagnostics)`` of a method of the module table (``koh`` ignores ``mask``).

    Args:
        method: ``"gif"``, ``"freezing"``, ``"projecting"``, ``"koh"`` (see
            :data:`LINEAR_METHODS`), or a :class:`LinearMethod` of one's own.
        loss: ``params -> scalar``, the loss whose Hessian is H (retained training data).
        params: the trained point θ̂.
        grad: the right-hand side g, same keys and shapes as ``params``.
        mask: boolean dict selecting J; ``None`` selects every parameter.
        solver: ``"lissa"`` (:func:`~gif_bench.influence.solvers.lissa`), ``"authors"`` (the
            same with the research code's settings, :data:`AUTHORS_SERIES`), ``"cg"``
            (:func:`~gif_bench.influence.solvers.cg` on the normal equations; with
            ``preconditioner="jacobi"``, ``probes`` and ``probe_seed``, Jacobi-preconditioned),
            ``"lsqr"`` (:func:`~gif_bench.influence.solvers.lsqr`), ``"minres"``
            (:func:`~gif_bench.influence.solvers.minres` on ``K x = r`` itself, for the
            symmetric systems only), options passed on; or ``"exact"``
            (explicit Hessian, dense least squares; small models only); or a :class:`Solver`
            (``options`` are added to its own). Every solver but ``minres`` takes ``damping``
            λ ≥ 0: the Tikhonov solution ``(KᵀK + λI)⁻¹ Kᵀ r`` of the method's system.
        model: the module ``loss`` evaluates, if any. With it, ``gif`` and ``freezing`` take
            their restricted products from :func:`~gif_bench.influence.masked.masked_hvps`,
            which skip the work outside J (same results, fewer FLOPs).
        hvp: how Hessian-vector products are formed, one of
            :data:`~gif_bench.influence.hvp.MODES` (see :func:`~gif_bench.influence.hvp.hvp_fn`).
    """
    if isinstance(method, str):
        if method not in LINEAR_METHODS:
            raise ValueError(f"method={method!r} is not one of {', '.join(LINEAR_METHODS)}")
        method = LINEAR_METHODS[method]
    solver = _solver(solver, options)
    params = {k: v.detach() for k, v in params.items()}
    grad = {k: grad[k] for k in params}  # every vector in the key order of params
    if mask is None:
        mask = _full_mask(params)
    else:
        mask = {k: mask[k].to(device=params[k].device, dtype=torch.bool) for k in params}
    restricted_by = model if method.restricted else None
    products = HessianProducts(loss, params, mask, hvp, restricted_by) if solver.uses_products else None
    return _solve(method, System(loss, params, grad, mask, products), solver)


def _solve(method: LinearMethod, system: System, solver: Solver) -> tuple[Params, SolveInfo]:
    """``solve_linear`` on normalised arguments, with the products (and so their trace) given."""
    x, info = solver(method, system)
    if system.products is None:
        return x, info
    info.hvp = system.products.form()
    return (system.products.p(x) if method.masked else x), info


def second_order(
    loss: Loss,
    removed_loss: Loss | None,
    params: Mapping[str, Tensor],
    removed_grad: Mapping[str, Tensor],
    *,
    m: int,
    u: int,
    removed_hvp: HVP | None = None,
    solver: str | Solver = "cg",
    hvp: str = "linearize",
    return_info: bool = False,
    **options: Any,
) -> Params | tuple[Params, SolveInfo]:
    """Second-order group influence of removing U (Basu, You & Feizi, 2020).

    With p = u/m, H the Hessian of the **full** mean loss ``loss``, ``H_U`` the Hessian of
    ``removed_loss`` = Σ_{z∈U} ℓ(z) and G = ``removed_grad`` = Σ_{z∈U} ∇ℓ(z):

        Δθ = (1−2p)/(1−p)² · (1/m) · H⁻¹ G  +  1/(1−p)² · (1/m²) · H⁻¹ H_U H⁻¹ G,

    the change to add to θ̂ (the module's sign convention). ``removed_hvp`` (``v ↦ H_U v``)
    replaces the exact Hessian of ``removed_loss`` by another curvature of U, e.g. its
    Gauss–Newton part (:func:`~gif_bench.influence.hvp.ggn_fn`); ``removed_loss`` is then
    not used and may be ``None``.

    A relabelling (z → z' for z ∈ U) removes nothing: pass ``u=0`` with ``removed_loss`` =
    Σ_U [ℓ(z) − ℓ(z')] and G its gradient. The same second-order expansion of the perturbed
    objective, (1/m)[Σ ℓ + ε Σ_U (ℓ(z') − ℓ(z))] at ε = 1, gives the formula above with p = 0.
    For p = 0 the result is the first two terms of the Neumann series of
    ``(H − H_U/m)⁻¹ G/m`` (for a removal, up to O(p) in the coefficients), a useful
    approximation only while the spectral radius of ``(1/m) H⁻¹ H_U`` is well below 1. The
    exact H_U of a cross-entropy relabelling has no such bound: its Gauss–Newton parts cancel
    and ``H_U = Σ_U [∇²f_{y'}(x) − ∇²f_y(x)]`` (f_k the k-th logit) is indefinite and unrelated
    to H.

    Two solves with H (``solver``, ``hvp`` and ``options`` as for :func:`solve_linear` with
    ``koh``), which
    share one set of products (one trace), and one product with ``H_U``; the diagnostics add up
    both solves and report the larger residual.
    """
    if not 0 <= u < m:
        raise ValueError(f"need 0 <= u < m (u = 0: a relabelling), got u={u}, m={m}")
    if (removed_loss is None) == (removed_hvp is None):
        raise ValueError("pass exactly one of removed_loss and removed_hvp")
    solver = _solver(solver, options)
    p = u / m
    params = {k: v.detach() for k, v in params.items()}
    full = _full_mask(params)
    products = HessianProducts(loss, params, full, hvp, None) if solver.uses_products else None  # one trace, two solves

    def koh(rhs: Mapping[str, Tensor]) -> tuple[Params, SolveInfo]:
        return _solve(KOH, System(loss, params, {k: rhs[k] for k in params}, full, products), solver)

    first, info1 = koh(removed_grad)
    if removed_hvp is None:
        removed_hvp = hvp_fn(removed_loss, params, mode="reverse")  # one product: no trace
    second, info2 = koh(removed_hvp(first))
    c1, c2 = (1 - 2 * p) / ((1 - p) ** 2 * m), 1 / ((1 - p) ** 2 * m**2)
    delta = {k: c1 * first[k] + c2 * second[k] for k in first}
    info = SolveInfo(
        solver=info1.solver,
        iterations=info1.iterations + info2.iterations,
        hvps=info1.hvps + info2.hvps + 1,
        restarts=info1.restarts + info2.restarts,
        scale=info1.scale,  # the second solve's right-hand side may be zero (a relabelling)
        residual=max(info1.residual, info2.residual),
        converged=info1.converged and info2.converged,
        hvp=info1.hvp if info1.hvp == info2.hvp else f"{info1.hvp}; second solve {info2.hvp}",
    )
    return (delta, info) if return_info else delta


def _second_order_entry(loss: Loss, params, grad, *, removed_loss: Loss | None = None, **kwargs):
    return second_order(loss, removed_loss, params, grad, return_info=True, **kwargs)


def _linear_entry(method: str):
    def entry(loss: Loss, params, grad, **kwargs):
        return solve_linear(method, loss, params, grad, **kwargs)

    entry.__name__ = entry.__qualname__ = f"solve_{method}"
    return entry


# ``solve``'s methods: name -> ``(loss, params, grad, **options) -> (Δθ, SolveInfo)``.
METHODS: dict[str, Callable[..., tuple[Params, SolveInfo]]] = {
    **{name: _linear_entry(name) for name in LINEAR_METHODS},
    "second_order": _second_order_entry,
}
