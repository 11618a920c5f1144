"""Figures from collected result rows (PNG, matplotlib's Agg backend: no display needed)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from . import storage  # noqa: E402
from .tables import LABELS, METHOD_ORDER, SELECTOR_LABELS, selector_stats  # noqa: E402


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
    for selector, label in SELECTOR_LABELS.items():
        line = stats[stats["selector"] == selector].sort_values("mr")
        if line.empty:
            continue
        x, mean, std = 100 * line["mr"].to_numpy(), line["mean"], line["std"].fillna(0)
        ax.plot(x, mean, marker="o", label=label)
        ax.fill_between(x, mean - std, mean + std, alpha=0.15)
    for prefix, style, label in (("before_", ":", "before the edit"), ("retrain_", "--", "retrained")):
        ref = pd.to_numeric(rows[f"{prefix}test_acc"], errors="coerce").groupby(rows["seed"]).first().mean()
        ax.axhline(ref, color="grey", linestyle=style, linewidth=1, label=label)
    ax.set_xscale("log")
    ax.set_xlabel("modification ratio (%)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(title or "Selector study: GIF, class removal")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return _save(fig, path)


def trajectories(rows: pd.DataFrame, path: Path, title: str = "") -> Path:
    """Self and test accuracy per update step, one line per method (the lowest seed and, for
    the partial methods, the smallest MR of ``rows``)."""
    seed = rows["seed"].min()
    fig, (ax_self, ax_test) = plt.subplots(1, 2, figsize=(10, 3.8), sharex=True)
    for method in METHOD_ORDER:
        runs = rows[(rows["method"] == method) & (rows["seed"] == seed)].sort_values("mr")
        if runs.empty or not isinstance(runs["trajectory"].iloc[0], list):
            continue
        steps = pd.DataFrame(runs["trajectory"].iloc[0])
        label = LABELS[method] + (f" (MR {100 * runs['mr'].iloc[0]:g} %)" if runs["mr"].iloc[0] < 1 else "")
        ax_self.plot(steps["step"], steps["self_acc"], label=label)
        ax_test.plot(steps["step"], steps["test_acc"], label=label)
    for ax, what in ((ax_self, "self accuracy (%)"), (ax_test, "test accuracy (%)")):
        ax.set_xlabel("update step")
        ax.set_ylabel(what)
        ax.grid(alpha=0.3)
    ax_test.legend(fontsize=8)
    fig.suptitle(title or f"Trajectories (seed {seed})")
    return _save(fig, path)
