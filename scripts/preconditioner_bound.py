"""How much could a preconditioner save on GIF's normal equations? An upper bound, exactly.

Builds H_J (every column H P_J e_j, one restricted product each) for the quickstart's problem at
a width small enough for that, forms KᵀK = H_JᵀH_J in float64, and counts the iterations of CG
to a relative residual ``--tol`` with no preconditioner and with the exact diagonal, the exact
blocks of each unit (a row of a weight tensor and its bias) and the exact blocks of each layer
(each floored or damped by 10⁻³ × its mean diagonal, as singular blocks occur). A layer-block
K-FAC preconditioner approximates the last; it cannot beat the exact blocks.

    python scripts/preconditioner_bound.py -- experiment=quickstart model.width=0.125
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import torch

from gif_bench import config, editing, pipeline, quiet_torch_warnings, sweeps
from gif_bench.influence import tree
from gif_bench.influence.methods import HessianProducts

quiet_torch_warnings()


def cg_iterations(a: torch.Tensor, b: torch.Tensor, inverse: Callable, tol: float, max_iter: int = 5000) -> int:
    x, r = torch.zeros_like(b), b.clone()
    z = inverse(r)
    p, rz = z.clone(), r @ z
    for k in range(1, max_iter + 1):
        ap = a @ p
        alpha = rz / (p @ ap)
        x += alpha * p
        r -= alpha * ap
        if r.norm() <= tol * b.norm():
            return k
        z = inverse(r)
        rz_next = r @ z
        p = z + (rz_next / rz) * p
        rz = rz_next
    return max_iter


def block_inverse(a: torch.Tensor, groups: list[str]) -> Callable:
    members: dict[str, list[int]] = {}
    for i, g in enumerate(groups):
        members.setdefault(g, []).append(i)
    blocks = []
    for index in members.values():
        block = a[index][:, index]
        damping = 1e-3 * torch.diagonal(block).mean().clamp_min(1e-30)
        blocks.append((torch.tensor(index), torch.linalg.inv(block + damping * torch.eye(len(index), dtype=a.dtype))))

    def apply(r: torch.Tensor) -> torch.Tensor:
        out = torch.zeros_like(r)
        for index, inverse in blocks:
            out[index] = inverse @ r[index]
        return out

    return apply


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tol", type=float, default=1e-3)
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()
    run = config.run_settings(sweeps.compose([*args.overrides, "logger=none"]))
    prepared = pipeline.prepare(run, "cpu")
    pipeline.trained(prepared)
    problem = editing.setup(run, prepared.model, prepared.edit)
    products = HessianProducts(problem.hessian_loss, problem.params, problem.mask, "linearize", problem.folded)
    flat_mask = tree.flatten(problem.mask)
    cols = flat_mask.nonzero().squeeze(1)
    start = time.perf_counter()
    h_j = torch.empty(flat_mask.numel(), len(cols))
    for i, c in enumerate(cols.tolist()):
        e = torch.zeros(flat_mask.numel())
        e[c] = 1.0
        h_j[:, i] = tree.flatten(products.columns(tree.unflatten(e, problem.params)))
    print(f"H_J: {len(cols):,} columns in {time.perf_counter() - start:.0f} s", flush=True)
    a = (h_j.T @ h_j).double()
    b = (h_j.T @ tree.flatten(problem.grad)).double()
    units, layers = [], []
    for name, p in problem.params.items():
        layer = name.rsplit(".", 1)[0]
        for j in problem.mask[name].flatten().nonzero().squeeze(1).tolist():
            row = j // p[0].numel() if p.dim() > 1 else j
            units.append(f"{layer}:{row}")
            layers.append(layer)
    diagonal = torch.diagonal(a).clone()
    diagonal = diagonal.clamp_min(1e-3 * diagonal[diagonal > 0].mean())
    for label, inverse in (
        ("none", lambda r: r),
        ("exact diagonal (Jacobi)", lambda r: r / diagonal),
        ("exact unit blocks", block_inverse(a, units)),
        ("exact layer blocks", block_inverse(a, layers)),
    ):
        print(f"{label}: {cg_iterations(a, b, inverse, args.tol)} CG iterations to {args.tol:g}", flush=True)


if __name__ == "__main__":
    main()
