"""Full re-orthogonalization of the Krylov solvers' recurrences.

In exact arithmetic CG's residuals are mutually orthogonal (M⁻¹-orthogonal when
preconditioned), and so are the Lanczos vectors of MINRES and the right vectors of LSQR. In
floating point, and in float32 above all, they lose that orthogonality as soon as an eigenvalue
of the operator has converged: the solver starts rebuilding directions it has already explored,
and its convergence is delayed, often by several times on an ill-conditioned Hessian. Keeping
the vectors and removing their components from every new one (twice, which is enough in
floating point: Giraud, Langou & Rozložník, 2005) restores the exact-arithmetic convergence at
the cost of storing them: ``k`` vectors after ``k`` iterations, each of the size of the
unknowns' ``support`` only (J's entries for a restricted system), in the vectors' own dtype
(float32 storage does as well as float64 on the quickstart's systems: the same iterations).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor

from . import tree
from .tree import Params


class KrylovBasis:
    """Pairs ``(a_i, b_i)`` with ``⟨b_i, a_j⟩ = δ_ij``, against which a vector is re-orthogonalized:
    ``v ← v − Σ_i a_i ⟨b_i, v⟩``, so that ``⟨b_j, v⟩ = 0`` for every stored ``j``.

    For an orthonormal basis ``b_i = a_i`` (pass one vector). For preconditioned CG,
    ``a_i = r_i / √⟨r_i, z_i⟩`` and ``b_i = z_i / √⟨r_i, z_i⟩`` (``z = M⁻¹ r``) make the new
    residual M⁻¹-orthogonal to the earlier ones.

    ``like``: a vector of the space (shapes, dtype, device). ``support``: a boolean dict; every
    vector is known to be zero outside it, so only its entries are stored (``None``: all).
    """

    def __init__(self, like: Mapping[str, Tensor], support: Mapping[str, Tensor] | None = None) -> None:
        self._like = {k: t for k, t in like.items()}
        first = next(iter(like.values()))
        self._device = first.device
        if support is None:
            self._index = None
            self._size = sum(t.numel() for t in like.values())
        else:
            flat_support = torch.cat([support[k].reshape(-1).to(first.device) for k in like])
            self._index = flat_support.nonzero().squeeze(1)
            self._size = int(self._index.numel())
        self._full = sum(t.numel() for t in like.values())
        self._a = torch.empty(0, self._size, dtype=first.dtype, device=self._device)
        self._b: Tensor | None = None  # None: b_i = a_i
        self._count = 0

    def __len__(self) -> int:
        return self._count

    def _pack(self, v: Mapping[str, Tensor]) -> Tensor:
        flat = tree.flatten({k: v[k] for k in self._like}).to(self._a.dtype)
        return flat if self._index is None else flat[self._index]

    def _unpack(self, packed: Tensor) -> Params:
        if self._index is None:
            flat = packed
        else:
            flat = torch.zeros(self._full, dtype=packed.dtype, device=packed.device)
            flat[self._index] = packed
        return tree.unflatten(flat, self._like)

    def _grow(self, buffer: Tensor) -> Tensor:
        if self._count < buffer.shape[0]:
            return buffer
        grown = torch.empty(max(8, 2 * buffer.shape[0]), self._size, dtype=buffer.dtype, device=buffer.device)
        grown[: self._count] = buffer[: self._count]
        return grown

    def add(self, a: Mapping[str, Tensor], b: Mapping[str, Tensor] | None = None) -> None:
        """Store the pair ``(a, b)`` (``b`` = ``a`` if omitted; then every pair must omit it)."""
        if (b is None) != (self._b is None) and self._count > 0:
            raise ValueError("a basis stores either single vectors or pairs, not both")
        self._a = self._grow(self._a)
        self._a[self._count] = self._pack(a)
        if b is not None:
            self._b = self._grow(self._b if self._b is not None else torch.empty_like(self._a[:0]))
            self._b[self._count] = self._pack(b)
        self._count += 1

    def orthogonalize(self, v: Mapping[str, Tensor]) -> Params:
        """``v`` less its components along the stored vectors (two passes); entries outside the
        support are left as they are."""
        if self._count == 0:
            return dict(v)
        a = self._a[: self._count]
        b = a if self._b is None else self._b[: self._count]
        packed = self._pack(v)
        first = b @ packed
        coefficients = first + b @ (packed - a.T @ first)
        correction = self._unpack(a.T @ coefficients)
        return {k: v[k] - correction[k] for k in v}
