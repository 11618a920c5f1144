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
    vector is known to be zero outside it, so only its entries are stored (``None``: all of
    them). Memory: ``k`` vectors of the support's size after ``k`` pairs (``2k`` for pairs),
    allocated in blocks of :attr:`BLOCK` vectors.
    """

    BLOCK = 32

    def __init__(self, like: Mapping[str, Tensor], support: Mapping[str, Tensor] | None = None) -> None:
        self._like = {k: t for k, t in like.items()}
        first = next(iter(like.values()))
        self._dtype, self._device = first.dtype, first.device
        self._full = sum(t.numel() for t in like.values())
        if support is None:
            self._index = None
            self._size = self._full
        else:
            flat_support = torch.cat([support[k].reshape(-1).to(first.device) for k in like])
            self._index = flat_support.nonzero().squeeze(1)
            self._size = int(self._index.numel())
        self._a: list[Tensor] = []  # blocks of BLOCK rows
        self._b: list[Tensor] | None = None  # None: b_i = a_i
        self._count = 0

    def __len__(self) -> int:
        return self._count

    @property
    def dim(self) -> int:
        """Entries stored per vector: the support's size."""
        return self._size

    def _flat(self, v: Mapping[str, Tensor]) -> Tensor:
        return tree.flatten({k: v[k] for k in self._like}).to(self._dtype)

    def _on_support(self, flat: Tensor) -> Tensor:
        return flat if self._index is None else flat[self._index]

    def _pack(self, v: Mapping[str, Tensor]) -> Tensor:
        return self._on_support(self._flat(v))

    def _store(self, blocks: list[Tensor], packed: Tensor) -> None:
        row = self._count % self.BLOCK
        if row == 0:
            blocks.append(torch.empty(self.BLOCK, self._size, dtype=self._dtype, device=self._device))
        blocks[-1][row] = packed

    def add(self, a: Mapping[str, Tensor], b: Mapping[str, Tensor] | None = None) -> None:
        """Store the pair ``(a, b)`` (``b`` = ``a`` if omitted; then every pair must omit it)."""
        if self._count > 0 and (b is None) != (self._b is None):
            raise ValueError("a basis stores either single vectors or pairs, not both")
        self._store(self._a, self._pack(a))
        if b is not None:
            if self._b is None:
                self._b = []
            self._store(self._b, self._pack(b))
        self._count += 1

    def _remove(self, packed: Tensor) -> Tensor:
        """One Gram–Schmidt pass: ``p − Σ_i a_i ⟨b_i, p⟩``, block by block (classical within a pass)."""
        a_blocks = self._a
        b_blocks = self._a if self._b is None else self._b
        coefficients = []
        for i, b in enumerate(b_blocks):
            rows = min(self.BLOCK, self._count - i * self.BLOCK)
            coefficients.append(b[:rows] @ packed)
        out = packed
        for a, c in zip(a_blocks, coefficients):
            out = out - a[: len(c)].T @ c
        return out

    def orthogonalize(self, v: Mapping[str, Tensor]) -> Params:
        """``v`` less its components along the stored vectors: two Gram–Schmidt passes, the
        second on the first's result ("twice is enough"); entries outside the support are
        left as they are."""
        if self._count == 0:
            return dict(v)
        flat = self._flat(v)
        packed = self._remove(self._remove(self._on_support(flat)))
        if self._index is None:
            flat = packed
        else:
            flat = flat.clone()
            flat[self._index] = packed
        return tree.unflatten(flat, self._like)  # in the basis's (the vectors') dtype
