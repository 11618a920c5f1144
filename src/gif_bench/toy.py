"""The paper's Figure 2 toy: linear regression R⁶ → R, remove four points, J = {θ1, θ2}.

Every method's update Δθ (exact solves, the quadratic has a constant Hessian) is applied in
``steps`` equal increments; the figure draws the path over the contours of the retained mean
squared error as a function of (θ1, θ2) with the other parameters frozen at θ̂, a marker at
every 10th increment, and the (θ1, θ2) that minimise that loss.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig

from . import influence, storage

log = logging.getLogger(__name__)

METHODS = ("gif", "freezing", "projecting")


def _problem(cfg: DictConfig):
    gen = torch.Generator().manual_seed(int(cfg.seed))
    n, d = int(cfg.task.samples), int(cfg.task.dim)
    x = torch.randn(n, d, generator=gen, dtype=torch.double)
    # Correlated features make the frozen and the full problems disagree visibly.
    x = x @ (torch.eye(d, dtype=torch.double) + 0.6 * torch.randn(d, d, generator=gen, dtype=torch.double))
    theta_true = torch.randn(d, generator=gen, dtype=torch.double)
    y = x @ theta_true + float(cfg.task.noise) * torch.randn(n, generator=gen, dtype=torch.double)
    removed = torch.randperm(n, generator=gen)[: int(cfg.task.removed)]
    kept = torch.tensor([i for i in range(n) if i not in set(removed.tolist())])
    return x, y, removed, kept


def _mse(theta: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return 0.5 * ((x @ theta - y) ** 2).mean()


def run(cfg: DictConfig) -> dict[str, Any]:
    """Compute the three updates, write the figure and a result row; return the row."""
    x, y, removed, kept = _problem(cfg)
    m, u = len(y), len(removed)
    theta = torch.linalg.lstsq(x, y.unsqueeze(1)).solution.squeeze(1)  # θ̂ on all the data
    params = {"theta": theta}
    retained_loss = lambda p: _mse(p["theta"], x[kept], y[kept])  # noqa: E731
    g = influence.gradient(lambda p: 0.5 * ((x[removed] @ p["theta"] - y[removed]) ** 2).sum(), params)
    g = {"theta": g["theta"] / (m - u)}
    j = torch.zeros_like(theta, dtype=torch.bool)
    j[list(cfg.task.selected)] = True
    mask = {"theta": j}
    deltas = {name: influence.solve(name, retained_loss, params, g, mask=mask, solver="exact") for name in METHODS}

    steps = int(cfg.task.steps)
    paths = {
        name: torch.stack([theta + (k / steps) * d["theta"] for k in range(steps + 1)]) for name, d in deltas.items()
    }
    a, b = list(cfg.task.selected)
    best = theta + deltas["freezing"]["theta"]  # exact minimiser over J for a quadratic
    row: dict[str, Any] = {
        "experiment": str(cfg.name),
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
    figure = Path(cfg.paths.root) / "figures" / "toy_regression.png"
    _plot(paths, theta, best, (a, b), x[kept], y[kept], figure)
    row["figure"] = str(figure)
    row["status"] = "ok"
    storage.write_json(Path(cfg.paths.root) / "results" / str(cfg.name) / "toy_regression.json", row)
    log.info("toy regression figure: %s", figure)
    return row


def _plot(paths, theta, best, axes, x, y, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    a, b = axes
    points = torch.cat([p[:, [a, b]] for p in paths.values()] + [best[[a, b]].unsqueeze(0)])
    lo, hi = points.min(0).values, points.max(0).values
    pad = 0.35 * (hi - lo).clamp_min(0.2)
    g1 = torch.linspace(float(lo[0] - pad[0]), float(hi[0] + pad[0]), 160, dtype=torch.double)
    g2 = torch.linspace(float(lo[1] - pad[1]), float(hi[1] + pad[1]), 160, dtype=torch.double)
    t1, t2 = torch.meshgrid(g1, g2, indexing="ij")
    grid = theta.repeat(t1.numel(), 1)
    grid[:, a], grid[:, b] = t1.reshape(-1), t2.reshape(-1)
    loss = 0.5 * ((grid @ x.T - y) ** 2).mean(1).reshape(t1.shape)

    fig, ax = plt.subplots(figsize=(6, 5), dpi=120)
    cs = ax.contour(t1.numpy(), t2.numpy(), loss.numpy(), levels=18, cmap="Greys", linewidths=0.8)
    ax.clabel(cs, fontsize=6)
    colours = {"gif": "tab:blue", "freezing": "tab:orange", "projecting": "tab:green"}
    for name, p in paths.items():
        ax.plot(p[:, a], p[:, b], color=colours[name], lw=1.2)
        ax.plot(p[::10, a], p[::10, b], "o", color=colours[name], ms=4, label=name)
    ax.plot([theta[a]], [theta[b]], "ks", ms=6, label="θ̂ (trained on all data)")
    ax.plot([best[a]], [best[b]], "r*", ms=12, label="best (θ1, θ2), others frozen")
    ax.set_xlabel("θ1")
    ax.set_ylabel("θ2")
    ax.set_title("Removing 4 points from a linear regression, J = {θ1, θ2}")
    ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    storage.write_atomic(path, lambda tmp: fig.savefig(tmp, format="png"))
    plt.close(fig)
