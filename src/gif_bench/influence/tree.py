"""Arithmetic on parameter dicts (``dict[str, Tensor]``), the vectors of this library.

Every function treats a dict as one long vector made of its tensors in key order.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor

Params = dict[str, Tensor]


def dot(a: Mapping[str, Tensor], b: Mapping[str, Tensor]) -> Tensor:
    """⟨a, b⟩ summed over every tensor, as a 0-d tensor."""
    return sum((torch.vdot(a[k].reshape(-1), b[k].reshape(-1)) for k in a), torch.zeros(()))


def norm(a: Mapping[str, Tensor]) -> float:
    """Euclidean norm ‖a‖ of the concatenated tensors."""
    return float(torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(t) for t in a.values()])))


def add(a: Mapping[str, Tensor], b: Mapping[str, Tensor], alpha: float = 1.0) -> Params:
    """a + α b."""
    return {k: a[k] + alpha * b[k] for k in a}


def scale(a: Mapping[str, Tensor], alpha: float) -> Params:
    """α a."""
    return {k: alpha * t for k, t in a.items()}


def zeros_like(a: Mapping[str, Tensor]) -> Params:
    return {k: torch.zeros_like(t) for k, t in a.items()}


def project(a: Mapping[str, Tensor], mask: Mapping[str, Tensor] | None) -> Params:
    """P_J a: keep the entries selected by the boolean ``mask``, set the rest to exactly 0."""
    if mask is None:
        return dict(a)
    return {k: torch.where(mask[k], t, torch.zeros((), dtype=t.dtype, device=t.device)) for k, t in a.items()}


def flatten(a: Mapping[str, Tensor]) -> Tensor:
    """Concatenate the tensors of ``a`` (key order) into one 1-d tensor."""
    return torch.cat([t.reshape(-1) for t in a.values()])


def unflatten(vec: Tensor, like: Mapping[str, Tensor]) -> Params:
    """Inverse of :func:`flatten`: split ``vec`` into tensors shaped like ``like``."""
    out, i = {}, 0
    for k, t in like.items():
        out[k] = vec[i : i + t.numel()].reshape(t.shape).to(t.dtype)
        i += t.numel()
    return out


def count(mask: Mapping[str, Tensor]) -> int:
    """Number of selected entries in a boolean mask."""
    return int(sum(int(m.sum()) for m in mask.values()))
