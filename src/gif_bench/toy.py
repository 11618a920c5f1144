"""The paper's Figure 2 toy: linear regression R⁶ → R, remove four points, J = {θ1, θ2}.

    python -m gif_bench.toy [--out DIR] [--seed 0]

Every masked method of the library (GIF, freezing and the projected IF; exact solves, the quadratic has
a constant Hessian) is applied in ``steps`` equal increments; the figure
(``DIR/figures/toy_regression.png``, :func:`gif_bench.plots.toy_regression`) draws each path
over the contours of the retained mean squared error as a function of (θ1, θ2) with the other
parameters frozen at θ̂. The numbers go to ``DIR/results/toy_regression/toy_regression.json``.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from . import influence, quiet_torch_warnings, storage

NAME = "toy_regression"


@dataclass(frozen=True)
class Toy:
    """The problem: ``samples`` points in R^``dim``, ``removed`` of them removed, J = ``selected``."""

    seed: int = 0
    samples: int = 40
    dim: int = 6
    removed: int = 4
    noise: float = 0.5
    selected: tuple[int, int] = (0, 1)  # θ1, θ2
    steps: int = 50  # increments along each update; a marker every 10th


def _problem(cfg: Toy):
    gen = torch.Generator().manual_seed(int(cfg.seed))
    n, d = int(cfg.samples), int(cfg.dim)
    x = torch.randn(n, d, generator=gen, dtype=torch.double)
    # Correlated features make the frozen and the full problems disagree visibly.
    x = x @ (torch.eye(d, dtype=torch.double) + 0.6 * torch.randn(d, d, generator=gen, dtype=torch.double))
    theta_true = torch.randn(d, generator=gen, dtype=torch.double)
    y = x @ theta_true + float(cfg.noise) * torch.randn(n, generator=gen, dtype=torch.double)
    removed = torch.randperm(n, generator=gen)[: int(cfg.removed)]
    kept = torch.tensor([i for i in range(n) if i not in set(removed.tolist())])
    return x, y, removed, kept


def _mse(theta: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return 0.5 * ((x @ theta - y) ** 2).mean()


def run(cfg: Toy, out: str | Path) -> dict[str, Any]:
    """Compute the updates, write the figure and the row under ``out``; return the row."""
    x, y, removed, kept = _problem(cfg)
    m, u = len(y), len(removed)
    theta = torch.linalg.lstsq(x, y.unsqueeze(1)).solution.squeeze(1)  # θ̂ on all the data
    params = {"theta": theta}
    retained_loss = lambda p: _mse(p["theta"], x[kept], y[kept])  # noqa: E731
    g = influence.gradient(lambda p: 0.5 * ((x[removed] @ p["theta"] - y[removed]) ** 2).sum(), params)
    g = {"theta": g["theta"] / (m - u)}
    j = torch.zeros_like(theta, dtype=torch.bool)
    j[list(cfg.selected)] = True
    mask = {"theta": j}
    methods = [name for name, method in influence.LINEAR_METHODS.items() if method.masked]
    deltas = {name: influence.solve(name, retained_loss, params, g, mask=mask, solver="exact") for name in methods}

    steps = int(cfg.steps)
    paths = {
        name: torch.stack([theta + (k / steps) * d["theta"] for k in range(steps + 1)]) for name, d in deltas.items()
    }
    a, b = list(cfg.selected)
    best = theta.clone()  # the retained loss's minimiser over J, the other parameters at θ̂
    others = ~j
    rest = y[kept] - x[kept][:, others] @ theta[others]
    best[j] = torch.linalg.lstsq(x[kept][:, j], rest.unsqueeze(1)).solution.squeeze(1)
    row: dict[str, Any] = {
        "experiment": NAME,
        "task": "toy_regression",
        "seed": int(cfg.seed),
        "retained_loss_before": float(retained_loss(params)),
        "optimum_over_j": [float(best[a]), float(best[b])],
        "retrain_loss": float(
            _mse(torch.linalg.lstsq(x[kept], y[kept].unsqueeze(1)).solution.squeeze(1), x[kept], y[kept])
        ),
    }
    for name, path in paths.items():
        row[f"{name}_end"] = [float(path[-1, a]), float(path[-1, b])]
        row[f"{name}_retained_loss"] = float(_mse(path[-1], x[kept], y[kept]))
    from .plots import toy_regression

    figure = toy_regression(paths, theta, best, (a, b), x[kept], y[kept], Path(out) / "figures" / f"{NAME}.png")
    row["figure"] = str(figure)
    row["status"] = "ok"
    row["json"] = str(storage.write_json(Path(out) / "results" / NAME / f"{NAME}.json", row))
    return row


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m gif_bench.toy", description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("outputs"), help="folder for figures/ and results/")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    quiet_torch_warnings()
    row = run(Toy(seed=args.seed), args.out)
    print(f"figure: {row['figure']}\nrow: {row['json']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
