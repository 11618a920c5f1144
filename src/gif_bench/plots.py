"""Figures from collected result rows (PNG, matplotlib's Agg backend: no display needed)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from . import storage  # noqa: E402
from .methods import METHODS  # noqa: E402
from .rows import PREFIX  # noqa: E402
from .rows import column as row_column  # noqa: E402
from .selectors import SELECTORS  # noqa: E402
from .tables import edit_methods, label, oracle, selector_label, selector_stats  # noqa: E402

MARKERS = ("o", "s", "^", "D", "v", "P", "X", "<", ">", "h", "*", "p", "8", "d", "H", "1", "2", "3")
# tab20's dark shades, then its light ones: twenty colours, no two methods alike below twenty
COLOURS = tuple(matplotlib.colormaps["tab20"].colors[i] for i in (*range(0, 20, 2), *range(1, 20, 2)))


def style(method: str) -> tuple[tuple[float, float, float], str]:
    """A method's colour and marker, fixed by its place in the method registry: the same in every
    figure, and no two methods share either (up to 18 methods)."""
    index = list(METHODS).index(method) if method in METHODS else len(METHODS)
    return COLOURS[index % len(COLOURS)], MARKERS[index % len(MARKERS)]


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
    for prefix, style, name in (
        (PREFIX["before"], ":", "before the edit"),
        (PREFIX["retrain"], "--", "retrained"),
    ):
        ref = pd.to_numeric(rows[f"{prefix}test_acc"], errors="coerce").groupby(rows["seed"]).first().mean()
        ax.axhline(ref, color="grey", linestyle=style, linewidth=1, label=name)
    ax.set_xscale("log")
    ax.set_xlabel("modification ratio (%)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(title or "Selector study: GIF, class removal")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return _save(fig, path)


def trajectory_lines(rows: pd.DataFrame) -> dict[str, tuple[str, pd.DataFrame]]:
    """The lines of :func:`trajectories`: method → (label, per-step frame), one per edit method
    in registry order (the lowest seed and, for the partial methods, the smallest MR of
    ``rows``)."""
    seed = rows["seed"].min()
    lines = {}
    for method in edit_methods():
        runs = rows[(rows["method"] == method) & (rows["seed"] == seed)].sort_values("mr")
        if runs.empty or not isinstance(runs["trajectory"].iloc[0], list):
            continue
        name = label(method) + (f" (MR {100 * runs['mr'].iloc[0]:.3g} %)" if runs["mr"].iloc[0] < 1 else "")
        first = runs.iloc[0]
        # step 0: the model before the edit (the row's before_ metrics), where every line starts
        start = {k: first.get(row_column(k, "before")) for k in ("self_acc", "test_acc", "val_acc")}
        steps = [{"step": 0, **start}] if all(pd.notna(v) for v in start.values()) else []
        lines[method] = (name, pd.DataFrame(steps + list(first["trajectory"])))
    return lines


def trajectories(rows: pd.DataFrame, path: Path, title: str = "") -> Path:
    """Self and test accuracy per update step, one line per method (:func:`trajectory_lines`),
    each in its :func:`style`; the test split where it was evaluated (every ``update.eval_every``
    steps, the final and the best iterate)."""
    fig, (ax_self, ax_test) = plt.subplots(1, 2, figsize=(11.5, 3.8), sharex=True)
    for method, (name, steps) in trajectory_lines(rows).items():
        colour, marker = style(method)
        every = max(1, len(steps) // 8)  # markers sparse enough to read the lines
        ax_self.plot(steps["step"], steps["self_acc"], color=colour, marker=marker, markevery=every, ms=5, label=name)
        tested = steps.dropna(subset=["test_acc"]) if "test_acc" in steps else steps.iloc[:0]
        ax_test.plot(tested["step"], tested["test_acc"], color=colour, marker=marker, ms=5, label=name)
    for ax, what in ((ax_self, "self accuracy (%)"), (ax_test, "test accuracy (%)")):
        ax.set_xlabel("update step (unlearners: epoch)")
        ax.set_ylabel(what)
        ax.grid(alpha=0.3)
    ax_test.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))  # outside: no line hidden
    fig.suptitle(title or f"Trajectories (seed {rows['seed'].min()})")
    return _save(fig, path)


def pareto_points(rows: pd.DataFrame, iterate: str = "best") -> pd.DataFrame:
    """One point per edit line (method, selector, MR) of ``rows``: the gap to retraining
    (``iterate``'s) as mean and 95 % CI over seeds, and the edit's seconds as geometric mean with
    the 95 % CI of their logarithm (seconds span decades)."""
    import numpy as np

    from .stats import mean_ci

    gap = {"best": "best_gap_to_retrain", "final": "gap_to_retrain"}[iterate]
    edits = rows[(rows["method"] != oracle()) & (rows.get("status", "ok") == "ok")]
    out = []
    for (method, selector, mr), group in edits.groupby(["method", "selector", "mr"], sort=False):
        seconds = pd.to_numeric(group["edit_seconds"], errors="coerce").to_numpy(dtype=float)
        seconds = seconds[np.isfinite(seconds) & (seconds > 0)]
        log_mean, log_ci = mean_ci(np.log10(seconds)) if len(seconds) else (float("nan"), float("nan"))
        log_ci = 0.0 if pd.isna(log_ci) else log_ci
        y, y_ci = mean_ci(pd.to_numeric(group[gap], errors="coerce"))
        out.append(
            dict(method=method, selector=selector, mr=mr, seconds=10**log_mean, low=10 ** (log_mean - log_ci),
                 high=10 ** (log_mean + log_ci), gap=y, gap_ci=y_ci, seeds=group["seed"].nunique())
        )  # fmt: skip
    order = {m: i for i, m in enumerate(METHODS)}
    return pd.DataFrame(out).sort_values(["method", "mr"], key=lambda c: c.map(order) if c.name == "method" else c)


def pareto(rows: pd.DataFrame, path: Path, iterate: str = "best", title: str = "") -> Path:
    """Gap to retraining against the edit's seconds (log scale): one point per method (and MR,
    where a table has several) in its :func:`style`, 95 % CIs over seeds on both axes, and
    retraining's seconds (mean over seeds, as its rows record them) as a vertical line: the
    lower left is better, and left of the line is cheaper than retraining."""
    pts = pareto_points(rows, iterate)
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    for method in (m for m in edit_methods() if m in set(pts["method"])):
        colour, marker = style(method)
        mine = pts[pts["method"] == method]
        for i, p in enumerate(mine.itertuples()):  # a method's further lines (selectors, MRs): next markers
            name = label(method)
            if mine["selector"].nunique() > 1:
                name += f", {selector_label(p.selector)}"
            if mine["mr"].nunique() > 1:
                name += f" (MR {100 * p.mr:.3g} %)"
            ax.errorbar(
                p.seconds, p.gap, xerr=[[p.seconds - p.low], [p.high - p.seconds]],
                yerr=None if pd.isna(p.gap_ci) else p.gap_ci, color=colour, ms=7, capsize=2, elinewidth=0.8,
                fmt=MARKERS[(MARKERS.index(marker) + i) % len(MARKERS)], label=name,
            )  # fmt: skip
    retrain = pd.to_numeric(rows.groupby("seed")["retrain_seconds"].first(), errors="coerce").dropna()
    if len(retrain):
        ax.axvline(retrain.mean(), color="black", linestyle="--", linewidth=1.2, label="retraining (its seconds)")
    ax.set_xscale("log")
    gaps = pts["gap"].dropna()
    spread = len(gaps) and gaps.max() > 10 * max(gaps.min(), 1.0)  # gaps over decades: near 0 would crowd
    if spread:
        ax.set_yscale("symlog", linthresh=1.0)  # linear within 1 point of retraining, logarithmic above
        top = (pts["gap"] + pts["gap_ci"].fillna(0.0)).max()
        ax.set_ylim(0.0, 1.6 * top)
    else:
        ax.set_ylim(bottom=-0.02 * max(ax.get_ylim()[1], 1.0))  # a gap is ≥ 0: a t-interval below it is cut
    ax.set_xlabel("edit seconds (log scale; geometric mean, 95 % CI over seeds)")
    scale = ", symlog" if spread else ""  # linear below 1 point, logarithmic above
    ax.set_ylabel(f"gap to retraining (points{scale}; {'best' if iterate == 'best' else 'final'} iterate)")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))  # outside: no point hidden
    ax.set_title(title or "Cost against gap to retraining (lower left is better)")
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
