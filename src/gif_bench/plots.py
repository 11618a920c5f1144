"""Figures from collected result rows (PNG, matplotlib's Agg backend: no display needed)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from . import storage  # noqa: E402
from .registry import SELECTORS  # noqa: E402
from .tables import edit_methods, label, selector_stats  # noqa: E402


def _save(fig, path: Path) -> Path:
    def write(tmp: str) -> None:
        fig.savefig(tmp, format="png", dpi=150, bbox_inches="tight")

    storage.write_atomic(path, write)
    plt.close(fig)
    return path


def selector_study(rows: pd.DataFrame, path: Path, iterate: str = "best", title: str = "") -> Path:
    """Figure 3: test accuracy against MR, one line per selector (mean over seeds, band = ±1 std);
    the MR-100 % run (every selector's choice) ends every line; dashed lines for the model
    before the edit and the retrained one."""
    stats = selector_stats(rows, iterate)
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for selector in (s for s in SELECTORS.values() if s.label):
        line = stats[stats["selector"] == selector.name].sort_values("mr")
        if line.empty:
            continue
        x, mean, std = 100 * line["mr"].to_numpy(), line["mean"], line["std"].fillna(0)
        ax.plot(x, mean, marker="o", label=selector.label)
        ax.fill_between(x, mean - std, mean + std, alpha=0.15)
    for prefix, style, name in (("before_", ":", "before the edit"), ("retrain_", "--", "retrained")):
        ref = pd.to_numeric(rows[f"{prefix}test_acc"], errors="coerce").groupby(rows["seed"]).first().mean()
        ax.axhline(ref, color="grey", linestyle=style, linewidth=1, label=name)
    ax.set_xscale("log")
    ax.set_xlabel("modification ratio (%)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(title or "Selector study: GIF, class removal")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return _save(fig, path)


def trajectory_lines(rows: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """The lines of :func:`trajectories`: label → per-step frame, one per edit method in
    registry order (the lowest seed and, for the partial methods, the smallest MR of ``rows``)."""
    seed = rows["seed"].min()
    lines = {}
    for method in edit_methods():
        runs = rows[(rows["method"] == method) & (rows["seed"] == seed)].sort_values("mr")
        if runs.empty or not isinstance(runs["trajectory"].iloc[0], list):
            continue
        name = label(method) + (f" (MR {100 * runs['mr'].iloc[0]:g} %)" if runs["mr"].iloc[0] < 1 else "")
        lines[name] = pd.DataFrame(runs["trajectory"].iloc[0])
    return lines


def trajectories(rows: pd.DataFrame, path: Path, title: str = "") -> Path:
    """Self and test accuracy per update step, one line per method (:func:`trajectory_lines`)."""
    fig, (ax_self, ax_test) = plt.subplots(1, 2, figsize=(10, 3.8), sharex=True)
    for name, steps in trajectory_lines(rows).items():
        ax_self.plot(steps["step"], steps["self_acc"], label=name)
        ax_test.plot(steps["step"], steps["test_acc"], label=name)
    for ax, what in ((ax_self, "self accuracy (%)"), (ax_test, "test accuracy (%)")):
        ax.set_xlabel("update step")
        ax.set_ylabel(what)
        ax.grid(alpha=0.3)
    ax_test.legend(fontsize=8)
    fig.suptitle(title or f"Trajectories (seed {rows['seed'].min()})")
    return _save(fig, path)


def toy_regression(paths: dict, theta, best, axes: tuple[int, int], x, y, path: Path) -> Path:
    """Figure 2: each method's path (``paths``: name → steps × d) over the contours of the
    mean squared error of (``x``, ``y``) as a function of θ[axes] (the others at ``theta``), a
    marker at every 10th step, θ̂ and ``best`` (the optimum over the two axes) marked."""
    import torch

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
    for colour, (name, p) in zip(plt.rcParams["axes.prop_cycle"].by_key()["color"], paths.items()):
        ax.plot(p[:, a], p[:, b], color=colour, lw=1.2)
        ax.plot(p[::10, a], p[::10, b], "o", color=colour, ms=4, label=name)
    ax.plot([theta[a]], [theta[b]], "ks", ms=6, label="θ̂ (trained on all data)")
    ax.plot([best[a]], [best[b]], "r*", ms=12, label="best (θ1, θ2), others frozen")
    ax.set_xlabel("θ1")
    ax.set_ylabel("θ2")
    ax.set_title("Removing 4 points from a linear regression, J = {θ1, θ2}")
    ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    storage.write_atomic(path, lambda tmp: fig.savefig(tmp, format="png"))
    plt.close(fig)
    return path
