"""Iterative solvers for the linear systems behind influence functions.

A solver receives a symmetric positive semi-definite operator ``A`` (a function on parameter
dicts, built from Hessian-vector products) and a right-hand side ``b``, and returns ``x`` with
``A x ≈ b`` together with a :class:`SolveInfo` record.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import torch
from torch import Tensor

from . import tree
from .basis import KrylovBasis
from .tree import Params

Operator = Callable[[Mapping[str, Tensor]], Params]


class SolverDiverged(RuntimeError):
    """LiSSA kept diverging after the allowed number of rescaled restarts."""


@dataclass
class SolveInfo:
    """Diagnostics of one solve.

    ``iterations`` counts the iterations of the run that produced the answer; ``hvps`` counts
    every Hessian-vector product spent, restarts and scale estimation included. ``scale`` is
    the final loss divisor M. ``residual`` is ``‖b − A x‖ / ‖b‖`` for the returned ``x``.
    ``hvp`` says how the Hessian products were formed (set by
    :func:`~gif_bench.influence.methods.solve`): the mode of
    :func:`~gif_bench.influence.hvp.hvp_fn`, with "restricted" for the products of
    :mod:`~gif_bench.influence.masked` and "math attention" where the fused attention kernel
    had to be replaced.
    """

    solver: str
    iterations: int = 0
    hvps: int = 0
    restarts: int = 0
    scale: float = 1.0
    residual: float = math.nan
    converged: bool = False
    hvp: str = ""


def _solved(info: SolveInfo, x: Params) -> tuple[Params, SolveInfo]:
    """``x`` as an exact answer (a zero right-hand side, or one K maps to zero)."""
    info.residual, info.converged = 0.0, True
    return x, info


def top_eigenvalue(
    matvec: Operator, like: Mapping[str, Tensor], iters: int, generator: torch.Generator | None = None
) -> float:
    """Largest eigenvalue of a PSD operator by ``iters`` steps of power iteration (a lower bound)."""
    v = {k: torch.randn(t.shape, generator=generator, dtype=t.dtype).to(t.device) for k, t in like.items()}
    v = tree.scale(v, 1.0 / max(tree.norm(v), 1e-30))
    lam = 0.0
    for _ in range(iters):
        av = matvec(v)
        lam = tree.norm(av)
        if lam == 0.0 or not math.isfinite(lam):
            break
        v = tree.scale(av, 1.0 / lam)
    return lam


def _initial_scale(
    matvec: Operator, like, scale, *, degree: int, power_iters: int, seed: int, info: SolveInfo, hvps_per_matvec: int
) -> float:
    """The starting loss divisor M: as given, or from power iteration so that M^degree ≈ λ_max."""
    if scale != "auto":
        return float(scale)
    lam = top_eigenvalue(matvec, like, power_iters, torch.Generator().manual_seed(seed))
    info.hvps += power_iters * hvps_per_matvec
    return lam ** (1.0 / degree) if lam > 0 and math.isfinite(lam) else 1.0


STOPS = ("residual", "difference")  # lissa's stop rules
DIVERGENCE_RULES = ("patience", "even_step")  # lissa's divergence rules
AUTHORS_FIRST_DIFFERENCE = 1e10  # the research code's "difference two iterations before" at the start


def lissa(
    matvec: Operator,
    rhs: Mapping[str, Tensor],
    *,
    degree: int = 2,
    scale: float | str = 1.0,
    mu: float = 2.0,
    growth: str = "multiply",
    max_iter: int = 1000,
    tol: float = 1e-6,
    stop: str = "residual",
    divergence: str = "patience",
    unknowns: int | None = None,
    damping: float = 0.0,
    max_restarts: int = 30,
    patience: int = 3,
    power_iters: int = 20,
    hvps_per_matvec: int = 2,
    seed: int = 0,
) -> tuple[Params, SolveInfo]:
    """The paper's modified LiSSA (eq. 8, Alg. 1) for ``(A + λI) x = b`` with ``A`` PSD.

    Dividing the loss by M scales ``A`` by ``M^-degree`` and ``b`` by the same factor
    (``degree`` = 2 for GIF's ``H_Jᵀ H_J``), so with ``c = M^-degree`` the series run is

        I_0 = c b,    I_{k+1} = c b + (I − c A_λ) I_k,    A_λ = A + λ I   (``damping`` λ ≥ 0),

    i.e. Landweber's iteration ``x_{k+1} = x_k + c (b − A_λ x_k)`` from ``x_0 = 0`` (``I_k =
    x_{k+1}``). It converges to ``A_λ⁻¹ b`` (for λ = 0 the minimum-norm solution on range(A))
    iff ``c λ_max(A_λ) < 2``; stopped early it is a regularised solve, the filter
    ``1 − (1 − c σ)^{k+1}`` on each eigenvalue σ. Each iteration costs one ``matvec``.

    Stop rules (``stop``):

    * ``"residual"``: stop when ``‖b − A_λ x‖ ≤ tol ‖b‖`` or after ``max_iter`` products;
      the ``x`` whose residual was measured is returned (``max_iter = N`` gives ``I_{N−1}``).
    * ``"difference"`` (the authors' research code): stop when the last step
      ``‖I_{k+1} − I_k‖ ≤ tol · √unknowns`` or after ``max_iter`` products; every product
      makes one more term, so ``max_iter = N`` returns ``I_N``, the sum of N + 1 terms.
      ``unknowns`` is |J| (default: every entry of ``b``).

    Divergence rules (``divergence``): ``"patience"``, ``patience`` consecutive growths of the
    residual (for PSD ``A`` in the convergent regime it never grows); ``"even_step"``, the
    authors' rule: at every even k, the step ``‖I_{k+1} − I_k‖`` larger than the one at k − 2
    (at k = 0: than 1e10). A non-finite step is divergence under both (the research code
    would return the NaNs). On divergence M is multiplied by ``mu`` (``growth="multiply"``, Alg.
    1) or increased by ``mu`` (``growth="add"``, the research code's ``M += step``) and the
    series restarts from scratch; after ``max_restarts`` restarts :class:`SolverDiverged`.

    ``scale`` is the initial M (the research code's is 1), or ``"auto"`` to set ``c = 1/λ̂``
    from ``power_iters`` steps of power iteration on ``A`` (λ̂ ≤ λ_max, so ``c λ_max ≥ 1``
    and restarts remain the safety net). The residual reported is ``‖b − A_λ x‖ / ‖b‖`` of
    the returned ``x``: free under ``"residual"``, one more product (counted) under
    ``"difference"``.
    """
    if growth not in ("multiply", "add"):
        raise ValueError(f"growth must be 'multiply' or 'add', got {growth!r}")
    if stop not in STOPS:
        raise ValueError(f"stop must be one of {STOPS}, got {stop!r}")
    if divergence not in DIVERGENCE_RULES:
        raise ValueError(f"divergence must be one of {DIVERGENCE_RULES}, got {divergence!r}")
    if damping < 0:
        raise ValueError(f"damping must be >= 0, got {damping}")
    info = SolveInfo(solver="lissa")
    b_norm = tree.norm(rhs)
    if b_norm == 0.0:
        return _solved(info, tree.zeros_like(rhs))
    op = damped(matvec, damping)
    m = _initial_scale(
        op, rhs, scale, degree=degree, power_iters=power_iters, seed=seed, info=info,
        hvps_per_matvec=hvps_per_matvec,
    )  # fmt: skip
    size = sum(t.numel() for t in rhs.values()) if unknowns is None else int(unknowns)
    step_tol = tol * math.sqrt(size)
    while True:
        c = m ** (-degree)
        x, r_norm, k, diverged = tree.scale(rhs, c), b_norm, 0, False  # x_1 = I_0 = c b, no product
        growths, even_before = 0, AUTHORS_FIRST_DIFFERENCE
        while k < max_iter and not (stop == "residual" and r_norm <= tol * b_norm):
            r = tree.add(rhs, op(x), -1.0)  # b − A_λ x_k
            info.hvps += hvps_per_matvec
            k += 1
            new_norm = tree.norm(r)
            if not math.isfinite(new_norm):
                diverged = True
                break
            if divergence == "even_step":
                if (k - 1) % 2 == 0:  # the research code's count of the step I_k → I_{k+1}
                    if c * new_norm > even_before:
                        diverged = True
                        break
                    even_before = c * new_norm
            else:
                # Below ~1e-5 ‖b‖ fp32 round-off can make the residual wobble; that is not divergence.
                growing = new_norm > r_norm * (1 + 1e-4) and new_norm > 1e-5 * b_norm
                growths = growths + 1 if growing else 0
                if growths >= patience:
                    diverged = True
                    break
            r_norm = new_norm
            if stop == "residual":
                if r_norm <= tol * b_norm:
                    break
                if k == max_iter:
                    break
            x = tree.add(x, r, c)  # one more term: I_k = x_{k+1}
            if stop == "difference" and c * r_norm <= step_tol:
                break
        if not diverged:
            break
        info.restarts += 1
        if info.restarts > max_restarts:
            raise SolverDiverged(
                f"LiSSA still diverges after {max_restarts} restarts (loss divisor M={m:.3g}); "
                "raise max_restarts or mu, or start from scale='auto'"
            )
        m = m * mu if growth == "multiply" else m + mu
    info.iterations, info.scale = k, m
    if stop == "difference":  # the returned x is one term past the last residual measured
        r_norm = tree.norm(tree.add(rhs, op(x), -1.0))
        info.hvps += hvps_per_matvec
        info.converged = c * r_norm <= step_tol
    else:
        info.converged = r_norm <= tol * b_norm
    info.residual = r_norm / b_norm
    return x, info


def tikhonov_augmented(
    op: Operator, op_t: Operator, rhs: Mapping[str, Tensor], damping: float
) -> tuple[Operator, Operator, Params]:
    """``[K; √λ I]``, its transpose and ``[r; 0]``, for K mapping a space of ``rhs``'s keys and
    shapes to itself: ``min ‖K x − r‖² + λ ‖x‖²`` as a plain least-squares problem, whose normal
    equations are ``(KᵀK + λI) x = Kᵀ r``. The extra block's keys are ``"tikhonov:" + key``."""
    root = math.sqrt(float(damping))
    extra = {f"tikhonov:{k}": k for k in rhs}

    def op_aug(v: Mapping[str, Tensor]) -> Params:
        return {**op(v), **{e: root * v[k] for e, k in extra.items()}}

    def op_t_aug(u: Mapping[str, Tensor]) -> Params:
        main = op_t({k: u[k] for k in rhs})
        return {k: main[k] + root * u[e] for e, k in extra.items()}

    return op_aug, op_t_aug, {**rhs, **{e: torch.zeros_like(rhs[k]) for e, k in extra.items()}}


def damped(matvec: Operator, damping: float) -> Operator:
    """``v ↦ A v + λ v`` (Tikhonov damping λ of a normal-equation operator); ``A`` itself for λ = 0."""
    if damping == 0.0:
        return matvec
    return lambda v: tree.add(matvec(v), v, float(damping))


def cg(
    matvec: Operator,
    rhs: Mapping[str, Tensor],
    *,
    max_iter: int = 1000,
    tol: float = 1e-6,
    hvps_per_matvec: int = 2,
    inverse_diagonal: Mapping[str, Tensor] | None = None,
    reorthogonalize: bool = False,
    support: Mapping[str, Tensor] | None = None,
    damping: float = 0.0,
) -> tuple[Params, SolveInfo]:
    """Conjugate gradients for ``(A + λI) x = b`` with ``A`` symmetric positive semi-definite
    and ``damping`` λ ≥ 0 (0: ``A x = b``).

    Started at ``x_0 = 0``; stops when ``‖b − A x‖ ≤ tol ‖b‖`` or after ``max_iter`` products.
    Applied to GIF's normal equations ``H_Jᵀ H_J x = H_Jᵀ g`` this is CGNR: in exact
    arithmetic the k-th iterate minimises ``‖H_J x − g‖`` over the k-th Krylov space, so it
    needs far fewer products than LiSSA's fixed-step series on ill-conditioned Hessians.

    ``inverse_diagonal`` ``M⁻¹`` (entries ≥ 0) makes it preconditioned CG: the same iteration
    on ``M^{-1/2} A M^{-1/2}``, which converges in fewer products when ``M ≈ diag(A)`` evens
    out the scales of the unknowns (Jacobi; see :func:`jacobi_normal_diagonal`). Entries where
    ``M⁻¹`` is 0 stay 0. The iteration stops on the recurrence's (unpreconditioned) residual;
    the residual reported, and ``converged``, are the true ``‖b − A x‖ / ‖b‖`` of the returned
    ``x``, from one more product with ``A`` (counted), since in floating point the two drift apart.

    ``reorthogonalize``: keep every residual and make each new one orthogonal to them (in the
    ``M⁻¹`` inner product), as exact arithmetic would (:mod:`.basis`); on GIF's float32 normal
    equations this cuts the products needed several times, for ``k`` stored vectors of the
    size of ``support`` (a boolean dict outside which every vector is zero; ``None``: all).
    """
    if damping < 0:
        raise ValueError(f"damping must be >= 0, got {damping}")
    matvec = damped(matvec, damping)
    info = SolveInfo(solver="cg+reorth" if reorthogonalize else "cg")
    b_norm = tree.norm(rhs)
    x = tree.zeros_like(rhs)
    if b_norm == 0.0:
        return _solved(info, x)

    def precondition(v: Mapping[str, Tensor]) -> Params:
        return dict(v) if inverse_diagonal is None else {k: v[k] * inverse_diagonal[k] for k in v}

    r = dict(rhs)
    z = precondition(r)
    p = dict(z)
    rz = float(tree.dot(r, z))
    basis = KrylovBasis(rhs, support) if reorthogonalize else None
    r_norm = b_norm
    k = 0
    while k < max_iter and r_norm > tol * b_norm:
        if basis is not None and rz > 0.0:
            basis.add(*_pair(r, z, rz, inverse_diagonal is None))
        ap = matvec(p)
        info.hvps += hvps_per_matvec
        k += 1
        curvature = float(tree.dot(p, ap))
        if not curvature > 0.0:  # p in the null space of A (or numerical breakdown)
            break
        alpha = rz / curvature
        x = tree.add(x, p, alpha)
        r = tree.add(r, ap, -alpha)
        if basis is not None:
            r = basis.orthogonalize(r)
        z = precondition(r)
        rz_next = float(tree.dot(r, z))
        r_norm = math.sqrt(rz_next) if inverse_diagonal is None else tree.norm(r)  # z is r without one
        p = tree.add(z, p, rz_next / rz)
        rz = rz_next
    info.iterations = k
    if k > 0:  # the recurrence's residual drifts from b − A x in floating point: report the true one
        r_norm = tree.norm(tree.add(rhs, matvec(x), -1.0))
        info.hvps += hvps_per_matvec
    info.residual = r_norm / b_norm
    info.converged = info.residual <= tol
    return x, info


def _pair(r: Params, z: Params, rz: float, plain: bool) -> tuple[Params, ...]:
    """CG's residual as a :class:`KrylovBasis` entry: ``r/√⟨r,z⟩`` (and ``z/√⟨r,z⟩`` when preconditioned)."""
    scale = 1.0 / math.sqrt(rz)
    return (tree.scale(r, scale),) if plain else (tree.scale(r, scale), tree.scale(z, scale))


def jacobi_normal_diagonal(
    op_t: Operator, like: Mapping[str, Tensor], probes: int, generator: torch.Generator, floor: float = 1e-3
) -> Params:
    """``M⁻¹`` for Jacobi-preconditioned CG on ``KᵀK``: the inverse of an estimate of
    ``diag(KᵀK)``, the squared column norms of K, from ``u ↦ Kᵀ u`` alone.

    ``diag(KᵀK)_j = Σ_i K_ij² = E[(Kᵀ z)_j²]`` for ``z`` with independent ±1 entries, so the
    mean of ``(Kᵀ z)²`` over ``probes`` draws is unbiased (one product each; relative error
    about ``√(2/probes)``). Entries below ``floor`` × their mean over the nonzero ones are
    raised to it, so a column estimated at nearly zero cannot dominate; exact zeros (columns
    outside J) get ``M⁻¹ = 0``. ``like``: a vector of K's row space (``u``'s shape).
    """
    if probes < 1:
        raise ValueError(f"probes must be >= 1, got {probes}")
    total = None
    for _ in range(probes):
        z = {
            k: (torch.randint(0, 2, t.shape, generator=generator) * 2 - 1).to(dtype=t.dtype, device=t.device)
            for k, t in like.items()
        }
        squared = {k: v * v for k, v in op_t(z).items()}
        total = squared if total is None else tree.add(total, squared)
    diag = tree.scale(total, 1.0 / probes)
    nonzero = [t[t > 0] for t in diag.values()]
    count = sum(int(t.numel()) for t in nonzero)
    if count == 0:
        return {k: torch.zeros_like(t) for k, t in diag.items()}
    mean = float(sum(t.sum() for t in nonzero)) / count
    return {k: torch.where(t > 0, 1.0 / t.clamp_min(floor * mean), 0.0) for k, t in diag.items()}


def minres(
    matvec: Operator,
    rhs: Mapping[str, Tensor],
    *,
    max_iter: int = 1000,
    tol: float = 1e-6,
    reorthogonalize: bool = False,
    support: Mapping[str, Tensor] | None = None,
) -> tuple[Params, SolveInfo]:
    """MINRES (Paige & Saunders, 1975) for ``A x = b`` with ``A`` symmetric, possibly indefinite.

    One product with ``A`` per iteration: the k-th iterate minimises ``‖b − A x‖`` over the
    Krylov space ``K_k(A, b)`` (Lanczos vectors, updated by Givens rotations), against CG on
    the normal equations ``A² x = A b``, which needs two products per iteration and whose
    convergence rate depends on the squared condition number. Stops when ``‖b − A x‖ ≤ tol ‖b‖``
    or, for an inconsistent (singular) system, when the recurrence's estimate of the
    normal-equation residual ``‖A(b − A x)‖ ≤ tol ‖A b‖``, or after ``max_iter`` iterations.

    The residual reported is the normal-equation one, ``‖A(b − A x)‖ / ‖A b‖``, computed
    exactly at the end (two more products, counted): the measure CG on ``A² x = A b`` and LSQR
    report, so the solvers compare. For a singular ``A`` and ``b`` outside its range the
    iterate may carry components of ``b`` in A's null space (``x_1 ∝ b``), which CG on the
    normal equations never does.

    ``reorthogonalize``: keep the Lanczos vectors orthonormal explicitly (:mod:`.basis`; ``k``
    stored vectors of the size of ``support``), as they are in exact arithmetic.
    """
    info = SolveInfo(solver="minres+reorth" if reorthogonalize else "minres")
    beta1 = tree.norm(rhs)
    x = tree.zeros_like(rhs)
    if beta1 == 0.0:
        return _solved(info, x)
    v_prev: Params | None = None
    v = tree.scale(rhs, 1.0 / beta1)
    w = tree.zeros_like(rhs)
    w_prev = tree.zeros_like(rhs)
    beta, phibar = beta1, beta1
    cs, sn, dbar, epsln = -1.0, 0.0, 0.0, 0.0
    ab_norm = math.nan  # ‖A b‖, from the first iteration
    basis = KrylovBasis(rhs, support) if reorthogonalize else None
    k = 0
    while k < max_iter:
        if basis is not None:
            basis.add(v)
        y = matvec(v)
        info.hvps += 1
        k += 1
        if v_prev is not None:
            y = tree.add(y, v_prev, -beta)
        alpha = float(tree.dot(v, y))
        y = tree.add(y, v, -alpha)
        if basis is not None:
            y = basis.orthogonalize(y)
        beta_next = tree.norm(y)
        if k == 1:
            ab_norm = beta1 * math.hypot(alpha, beta_next)
        # Givens rotation: the new column of the tridiagonal matrix's QR factor.
        old_eps = epsln
        delta = cs * dbar + sn * alpha
        gbar = sn * dbar - cs * alpha
        epsln = sn * beta_next
        dbar = -cs * beta_next
        ar_norm = phibar * math.hypot(gbar, dbar)  # ‖A r_{k−1}‖
        if ar_norm <= tol * ab_norm:  # x_{k−1} solves the normal equations; on a singular
            break  # system x_k's step (1/γ, γ → 0) could throw it far along the null space
        gamma = max(math.hypot(gbar, beta_next), 1e-300)
        cs, sn = gbar / gamma, beta_next / gamma
        phi, phibar = cs * phibar, sn * phibar
        w_new = {key: (v[key] - old_eps * w_prev[key] - delta * w[key]) / gamma for key in v}
        w_prev, w = w, w_new
        x = tree.add(x, w, phi)
        if phibar <= tol * beta1 or beta_next == 0.0:
            break
        v_prev, v, beta = v, tree.scale(y, 1.0 / beta_next), beta_next
    r = tree.add(rhs, matvec(x), -1.0)
    ar = matvec(r)
    info.hvps += 2
    a_b = ab_norm if math.isfinite(ab_norm) and ab_norm > 0 else beta1
    info.iterations = k
    info.residual = tree.norm(ar) / a_b
    info.converged = tree.norm(r) <= tol * beta1 or info.residual <= tol
    return x, info


def lissa_classic(
    hvp: Operator,
    rhs: Mapping[str, Tensor],
    *,
    damping: float = 0.01,
    scale: float | str = 25.0,
    max_iter: int = 1000,
    tol: float = 0.0,
    power_iters: int = 20,
    seed: int = 0,
) -> tuple[Params, SolveInfo]:
    """Koh & Liang's LiSSA for ``H x = g``: ``h_0 = g``, ``h_t = g + (1 − λ) h_{t−1} − H h_{t−1} / s``.

    Returns ``h_T / s``, which tends to ``(H + λ s I)⁻¹ g`` when the series converges, i.e. to
    ``H⁻¹ g`` for ``damping`` λ = 0. It needs every eigenvalue of ``λ I + H/s`` in (0, 2): an
    indefinite H makes it diverge, which is reported (``converged=False``, non-finite residual)
    rather than hidden. ``scale="auto"`` sets s to the power-iteration estimate of ``|λ|_max(H)``.
    Stops after ``max_iter`` steps, or earlier when ``‖h_t − h_{t−1}‖ ≤ tol ‖h_t‖``.
    """
    info = SolveInfo(solver="lissa")
    s = _initial_scale(hvp, rhs, scale, degree=1, power_iters=power_iters, seed=seed, info=info, hvps_per_matvec=1)
    h = dict(rhs)
    k = 0
    for k in range(1, max_iter + 1):  # noqa: B007 - k is the iteration count reported
        hh = hvp(h)
        info.hvps += 1
        new = {key: rhs[key] + (1 - damping) * h[key] - hh[key] / s for key in h}
        step = tree.norm(tree.add(new, h, -1.0))
        h = new
        if not math.isfinite(step):
            break
        if step <= tol * tree.norm(h):
            info.converged = True
            break
    x = tree.scale(h, 1.0 / s)
    info.iterations, info.scale = k, s
    g_norm = tree.norm(rhs)
    info.residual = tree.norm(tree.add(rhs, hvp(x), -1.0)) / g_norm if g_norm else 0.0
    info.hvps += 1
    return x, info


def lsqr(
    op: Operator,
    op_t: Operator,
    rhs: Mapping[str, Tensor],
    *,
    max_iter: int = 1000,
    tol: float = 1e-6,
    hvps_per_product: int = 1,
    reorthogonalize: bool = False,
    support: Mapping[str, Tensor] | None = None,
) -> tuple[Params, SolveInfo]:
    """LSQR (Paige & Saunders, 1982) for ``min ‖K x − r‖`` given ``v ↦ K v`` and ``u ↦ Kᵀ u``.

    Mathematically the iterates of CG on ``KᵀK x = Kᵀ r`` (two products per iteration), but
    it never forms ``KᵀK``, so it keeps its accuracy when K is ill-conditioned. Stops when the
    normal-equation residual ``‖Kᵀ(r − K x)‖ ≤ tol ‖Kᵀ r‖`` (the same measure the other
    solvers report) or after ``max_iter`` iterations; the stop uses the recurrence's estimate,
    the residual reported is computed for the returned ``x`` (two more products, counted).
    ``x_0 = 0``; a zero ``r`` still costs one product with Kᵀ, which gives x's shapes.

    ``reorthogonalize``: keep the right Golub–Kahan vectors ``v`` orthonormal explicitly
    (:mod:`.basis`; one-sided, which is what LSQR's accuracy needs; ``k`` stored vectors of
    the size of ``support``, the space of ``x``).
    """
    info = SolveInfo(solver="lsqr+reorth" if reorthogonalize else "lsqr")
    beta = tree.norm(rhs)
    u = tree.scale(rhs, 1.0 / beta) if beta > 0.0 else dict(rhs)
    v = op_t(u)  # x lives in Kᵀ's range: its shapes are v's, not r's
    info.hvps += hvps_per_product
    x = tree.zeros_like(v)
    alpha = tree.norm(v)
    if beta == 0.0 or alpha == 0.0:
        return _solved(info, x)
    v = tree.scale(v, 1.0 / alpha)
    basis = KrylovBasis(v, support) if reorthogonalize else None
    w = dict(v)
    phi_bar, rho_bar = beta, alpha
    normal_rhs = alpha * beta  # ‖Kᵀ r‖
    residual = 1.0
    k = 0
    while k < max_iter and residual > tol:
        u = tree.add(op(v), u, -alpha)
        beta = tree.norm(u)
        if beta > 0:
            u = tree.scale(u, 1.0 / beta)
        if basis is not None:
            basis.add(v)
        v = tree.add(op_t(u), v, -beta)
        if basis is not None:
            v = basis.orthogonalize(v)
        info.hvps += 2 * hvps_per_product
        alpha = tree.norm(v)
        if alpha > 0:
            v = tree.scale(v, 1.0 / alpha)
        k += 1
        rho = math.hypot(rho_bar, beta)
        c, s = rho_bar / rho, beta / rho
        theta, rho_bar = s * alpha, -c * alpha
        phi, phi_bar = c * phi_bar, s * phi_bar
        x = tree.add(x, w, phi / rho)
        w = tree.add(v, w, -theta / rho)
        residual = phi_bar * alpha * abs(c) / normal_rhs
        if alpha == 0.0 or beta == 0.0:
            residual = 0.0 if alpha == 0.0 else residual
            break
    if k > 0:  # the recurrence's estimate, checked: ‖Kᵀ(r − K x)‖ / ‖Kᵀ r‖ of the returned x
        misfit = tree.add(rhs, op(x), -1.0)
        residual = tree.norm(op_t(misfit)) / normal_rhs
        info.hvps += 2 * hvps_per_product
    info.iterations, info.residual = k, residual
    info.converged = residual <= tol
    return x, info
