"""Influence with approximate curvature: Kronecker-factored (K-FAC, EK-FAC) and low-rank (Arnoldi).

Each returns Δθ ≈ C⁻¹ g in the sign convention of :mod:`~gif_bench.influence.methods` (g the
removal gradient, Δθ the change to add to θ̂), for a curvature C other than the exact H:

* :func:`kfac_solve` — C = G + λI with G the **Kronecker-factored Gauss–Newton (Fisher)** of
  the loss on a data sample (Martens & Grosse 2015; Grosse & Martens 2016 for convolutions),
  per layer ``A ⊗ B`` with ``A = E[a aᵀ]`` (the layer's inputs; a convolution's unfolded
  patches) and ``B = E[b bᵀ]`` (the loss's gradients w.r.t. the layer's outputs). With
  ``eigen_corrected=True`` the eigenvalues ``λ_A ⊗ λ_B`` are replaced in the Kronecker
  eigenbasis ``Q_A ⊗ Q_B`` by the second moments of the per-example gradients projected onto
  it, ``E[(Q_Bᵀ ∇_W ℓ Q_A)²]`` (EK-FAC, George et al. 2018), the approximation behind
  kronfluence (Grosse et al. 2023). The factors and the damped inverse are curvlinops'
  (``KFACLinearOperator``, ``EKFACLinearOperator``, ``KFACInverseLinearOperator`` with exact
  damping, i.e. the inverse of ``A ⊗ B + λI`` through the factors' eigendecompositions).
  Only ``nn.Linear`` and ``nn.Conv2d`` weights and biases are tracked, as in kronfluence; every
  other parameter (e.g. BatchNorm's) gets Δθ = 0.
* :func:`arnoldi_solve` — C = V Λ Vᵀ, the k eigenpairs of H of largest magnitude found by
  ``iterations`` steps of Arnoldi (Schioppa et al. 2022), so Δθ = V Λ⁻¹ Vᵀ g: the Newton step
  restricted to H's dominant eigenspace.

Damping ``λ = None`` takes kronfluence's heuristic, 0.1 × the mean eigenvalue of G (here
over every tracked layer at once: ``0.1 · tr(G) / dim``).
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Callable, Iterable, Mapping

import torch
from torch import Tensor, nn

from . import tree
from .solvers import SolveInfo
from .tree import Params

FISHER_TYPES = ("mc", "type-2", "empirical")
DAMPING_RATIO = 0.1  # kronfluence's heuristic: λ = 0.1 × mean eigenvalue
KFAC_LAYERS = (nn.Linear, nn.Conv2d)


def kfac_parameters(model: nn.Module) -> dict[str, nn.Parameter]:
    """The parameters K-FAC tracks: weights and biases of ``nn.Linear`` and ``nn.Conv2d``."""
    out = {}
    for name, module in model.named_modules():
        if isinstance(module, KFAC_LAYERS):
            for pname, p in module.named_parameters(recurse=False):
                out[f"{name}.{pname}" if name else pname] = p
    return out


def kfac_operator(
    model: nn.Module,
    data: Iterable[tuple[Tensor, Tensor]],
    *,
    eigen_corrected: bool = False,
    fisher_type: str = "mc",
    seed: int = 0,
):
    """curvlinops' K-FAC (or EK-FAC) operator of the mean cross-entropy of ``model`` on ``data``
    (batches of ``(x, y)``), over :func:`kfac_parameters`. ``fisher_type``: ``mc`` (one label
    drawn from the model's predictive distribution per example, kronfluence's default),
    ``type-2`` (the exact Gauss–Newton) or ``empirical`` (the given labels)."""
    from curvlinops import EKFACLinearOperator, KFACLinearOperator

    if fisher_type not in FISHER_TYPES:
        raise ValueError(f"fisher_type={fisher_type!r} is not one of {', '.join(FISHER_TYPES)}")
    tracked = list(kfac_parameters(model).values())
    if not tracked:
        raise ValueError("K-FAC needs at least one nn.Linear or nn.Conv2d layer")
    cls = EKFACLinearOperator if eigen_corrected else KFACLinearOperator
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # curvlinops' prototype warnings
        return cls(
            model,
            nn.CrossEntropyLoss(),
            tracked,
            list(data),
            fisher_type=fisher_type,
            seed=seed,
            check_deterministic=False,
        )


def kfac_solve(
    model: nn.Module,
    data: Iterable[tuple[Tensor, Tensor]],
    grad: Mapping[str, Tensor],
    *,
    eigen_corrected: bool = False,
    damping: float | None = None,
    fisher_type: str = "mc",
    seed: int = 0,
) -> tuple[Params, SolveInfo]:
    """``Δθ = (G + λI)⁻¹ g`` on the K-FAC-tracked parameters (module docstring), 0 elsewhere.

    Args:
        model: the network in eval mode; G is taken at its current parameters.
        data: batches ``(x, y)`` of the examples whose curvature G is (retained training data).
        grad: g, keyed like ``model.named_parameters()``.
        eigen_corrected: EK-FAC instead of K-FAC.
        damping: λ; ``None``: ``0.1 · tr(G) / dim`` (kronfluence's 0.1 × mean eigenvalue).
        fisher_type: see :func:`kfac_operator`.
        seed: seeds the sampled labels of ``fisher_type="mc"``.

    Returns ``(Δθ, info)``; ``info.scale`` holds λ and ``info.hvp`` the form, e.g.
    ``"EK-FAC (curvlinops, mc Fisher)"``.
    """
    from curvlinops import KFACInverseLinearOperator

    names = list(kfac_parameters(model))
    batches = list(data)

    def solve(net: nn.Module, pairs: list, g: list[Tensor]) -> tuple[list[Tensor], float]:
        op = kfac_operator(net, pairs, eigen_corrected=eigen_corrected, fisher_type=fisher_type, seed=seed)
        lam = DAMPING_RATIO * float(op.trace) / op.shape[0] if damping is None else damping
        if not lam > 0:
            raise ValueError(f"damping must be > 0, got {lam}")
        inverse = KFACInverseLinearOperator(op, damping=float(lam), use_exact_damping=True)
        return inverse @ g, float(lam)

    g = [grad[n].detach() for n in names]
    precision = ""
    try:
        solved, damping = solve(model, batches, g)
    except torch.linalg.LinAlgError:
        # LAPACK's float32 eigendecomposition can fail on an ill-conditioned Kronecker factor
        # (measured: small_cnn on Fashion-MNIST); the same computation in float64 does not.
        wide = copy.deepcopy(model).double()
        pairs = [(x.double(), y) for x, y in batches]
        solved, damping = solve(wide, pairs, [t.double() for t in g])
        precision = "; in float64: float32's eigendecomposition failed"
    delta = {k: torch.zeros_like(v) for k, v in grad.items()}
    delta.update({n: s.to(grad[n].dtype) for n, s in zip(names, solved)})
    form = f"{'EK-FAC' if eigen_corrected else 'K-FAC'} (curvlinops, {fisher_type} Fisher{precision})"
    # no residual: G is not the H of the exact system, and there is no iteration to converge
    info = SolveInfo(solver="ekfac" if eigen_corrected else "kfac", iterations=1, scale=float(damping), hvp=form)
    info.converged = True
    return delta, info


def arnoldi(matvec: Callable[[Tensor], Tensor], start: Tensor, iterations: int) -> tuple[Tensor, Tensor]:
    """``iterations`` steps of Arnoldi on ``matvec`` from ``start``: ``(Q, Hk)`` with ``Q`` the
    n×(k+1) orthonormal Krylov basis and ``Hk`` the (k+1)×k upper Hessenberg matrix,
    ``A Q[:, :k] = Q Hk``. Orthogonalised twice (classical Gram–Schmidt), which keeps Q
    orthonormal to working precision. Stops early on an invariant subspace."""
    n = start.numel()
    iterations = min(iterations, n)
    basis = torch.zeros(iterations + 1, n, dtype=start.dtype, device=start.device)  # rows: contiguous slices
    h = torch.zeros(iterations + 1, iterations, dtype=start.dtype, device=start.device)
    basis[0] = start / torch.linalg.vector_norm(start)
    for j in range(iterations):
        w = matvec(basis[j])
        for _ in range(2):
            c = basis[: j + 1] @ w
            w = w - c @ basis[: j + 1]
            h[: j + 1, j] += c
        h[j + 1, j] = torch.linalg.vector_norm(w)
        if h[j + 1, j] <= 1e-10 * h[: j + 1, j].abs().max().clamp_min(1e-30):
            return basis[: j + 1].T, h[: j + 1, : j + 1]
        basis[j + 1] = w / h[j + 1, j]
    return basis.T, h


def top_eigenpairs(
    matvec: Callable[[Tensor], Tensor], start: Tensor, rank: int, iterations: int
) -> tuple[Tensor, Tensor]:
    """The ``rank`` eigenpairs of largest |λ| of a symmetric operator from :func:`arnoldi`:
    ``(λ, V)`` with V n×rank, the Ritz values and vectors of the Krylov space (for a symmetric
    operator Hk is tridiagonal; its square part is symmetrised before ``eigh``)."""
    q, h = arnoldi(matvec, start, iterations)
    k = h.shape[1]
    square = h[:k, :k]
    values, vectors = torch.linalg.eigh((square + square.T) / 2)
    keep = values.abs().argsort(descending=True)[:rank]
    return values[keep], (vectors[:, keep].T @ q.T[:k]).T


def arnoldi_solve(
    hvp: Callable[[Mapping[str, Tensor]], Params],
    params: Mapping[str, Tensor],
    grad: Mapping[str, Tensor],
    *,
    rank: int = 50,
    iterations: int = 200,
    seed: int = 0,
) -> tuple[Params, SolveInfo]:
    """``Δθ = V Λ⁻¹ Vᵀ g`` with ``(Λ, V)`` the ``rank`` eigenpairs of H of largest magnitude
    (:func:`top_eigenpairs`, Arnoldi from a seeded Gaussian start, one HVP per iteration).

    ``hvp``: ``v ↦ H v`` on parameter dicts. ``info.iterations`` is the Arnoldi steps taken,
    ``info.hvps`` the HVPs, ``info.scale`` the smallest |λ| kept and ``info.residual`` the
    relative residual ``‖g − H Δθ‖ / ‖g‖`` of the low-rank solution (one more HVP), ``info.hvp``
    how the products were formed: ``hvp.form`` for a product of
    :func:`~gif_bench.influence.hvp.hvp_fn`, else ``"given"``.
    """
    if rank < 1 or iterations < rank:
        raise ValueError(f"need 1 <= rank <= iterations, got rank={rank}, iterations={iterations}")
    first = next(iter(params.values()))
    gen = torch.Generator().manual_seed(seed)
    start = torch.randn(sum(p.numel() for p in params.values()), generator=gen, dtype=torch.float64)
    start = start.to(device=first.device, dtype=first.dtype)
    steps = 0

    def matvec(v: Tensor) -> Tensor:
        nonlocal steps
        steps += 1
        return tree.flatten(hvp(tree.unflatten(v, params)))

    values, vectors = top_eigenpairs(matvec, start, rank, iterations)
    g = tree.flatten({k: grad[k] for k in params})
    delta = vectors @ ((vectors.T @ g) / values)
    out = tree.unflatten(delta, params)
    residual = torch.linalg.vector_norm(g - matvec(delta)) / torch.linalg.vector_norm(g).clamp_min(1e-30)
    info = SolveInfo(
        solver="arnoldi",
        iterations=steps - 1,
        hvps=steps,
        scale=float(values.abs().min()),
        residual=float(residual),
        converged=True,
        hvp=getattr(hvp, "form", None) or "given",
    )
    return out, info


def fisher_diagonal(
    per_example_loss: Callable[[Mapping[str, Tensor], Tensor, Tensor], Tensor],
    params: Mapping[str, Tensor],
    x: Tensor,
    y: Tensor,
    chunk: int = 64,
) -> Params:
    """The empirical Fisher's diagonal ``(1/N) Σ_n (∇_θ ℓ(z_n))²`` over the examples ``(x, y)``,
    from per-example gradients (``torch.func.vmap`` of ``grad``) of ``per_example_loss(p, x_n,
    y_n)`` (one example, no batch dimension), ``chunk`` examples at a time."""
    params = {k: v.detach() for k, v in params.items()}
    per_example = torch.func.vmap(torch.func.grad(per_example_loss), in_dims=(None, 0, 0))
    total = tree.zeros_like(params)
    for i in range(0, len(y), chunk):
        grads = per_example(params, x[i : i + chunk], y[i : i + chunk])
        total = {k: total[k] + grads[k].pow(2).sum(0) for k in total}
    return tree.scale(total, 1.0 / len(y))
