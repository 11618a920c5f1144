"""The solver study's report (``python -m gif_bench.report experiment=solver_study ...``): per
task, one table line per (method, variant) with mean ± 95 % CI over seeds, every line paired
against the series on the same seeds, and a figure of the gap to retraining against the
regularisation strength (:mod:`gif_bench.study`), one colour and marker per method.

The grid is the study's sweep less the pairs a variant does not apply to (:func:`study_grid`);
the tables reuse :mod:`gif_bench.tables`' cells, significance marks and verdicts and
:mod:`gif_bench.stats`' tests.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pandas as pd

from . import report_header, rows, storage, sweeps
from .columns import Column
from .methods import METHODS
from .tasks import TASKS

SERIES = "series"  # the variant every line is paired against
# The study's own columns: per run (not per iterate), each mean ± CI over seeds.
STUDY_COLUMNS = (
    Column("regularisation", None),
    Column("direction_norm", None),
    Column("cos_converged", None),
    Column("cos_series", None),
)
STUDY_NAMES = {
    "regularisation": "ρ",
    "direction_norm": "‖Δθ‖",
    "cos_converged": "cos conv.",
    "cos_series": "cos series",
}
GRID_KEYS = ("task", "method", "variant", "seed")


def is_study(cfg) -> bool:
    return cfg.get("study") is not None


def study_grid(overrides: list[str]) -> pd.DataFrame:
    """One row per run of the study's sweep ``overrides``: ``task``, ``method``, ``variant``,
    ``seed``, ``family``, ``label``, ``mr``, ``selector``, the solver's name, ``max_iter``, ``tol``
    and ``damping`` and the method's ``damping`` (as the run records them), the
    experiment and the ``run_ids`` the run can have (as :func:`gif_bench.sweeps.expected_grid`);
    the pairs a variant does not apply to are left out."""
    from .config import canonicalize, not_a_run, resolve_device

    here = resolve_device("auto").type
    cells: dict[tuple, dict[str, Any]] = {}
    jobs = sweeps.sweep_jobs(overrides)
    applies: dict[str, list[str] | None] = {}  # variant → the methods it lists (learnt from its first job)

    def chosen(job: list[str], group: str) -> str | None:
        return next((o.split("=", 1)[1] for o in reversed(job) if o.startswith(f"{group}=")), None)

    with sweeps._composer() as composer:
        for job in jobs:
            variant, method = chosen(job, "study_variant"), chosen(job, "method")
            known = applies.get(variant)
            if variant in applies and known is not None and method is not None and method not in known:
                continue  # not a run: skip it without composing it
            cfg = composer(job)
            methods = cfg.study.get("methods") if cfg.get("study") is not None else None
            applies.setdefault(variant, None if methods is None else list(methods))
            if not_a_run(cfg) is not None:  # as the run does before canonicalising
                continue
            cfg = canonicalize(cfg)
            key = (cfg.task.name, cfg.method.name, str(cfg.study.variant), int(cfg.seed))
            ids = sweeps.device_run_ids(cfg, here)
            if key in cells and cells[key]["run_ids"] != ids:
                raise ValueError(
                    f"the study runs {dict(zip(GRID_KEYS, key))} more than once with other settings; "
                    "sweep only the study's task, method, variant and seed"
                )
            cells[key] = {
                **dict(zip(GRID_KEYS, key)),
                "family": str(cfg.study.get("family")),
                "label": str(cfg.study.get("label")),
                "mr": float(cfg.mr),
                "selector": cfg.selector.name,
                "solver": str(cfg.solver.name),
                "solver_max_iter": cfg.solver.get("max_iter"),
                "solver_tol": cfg.solver.get("tol"),
                "solver_damping": cfg.solver.get("damping"),
                "method_damping": cfg.method.get("damping"),
                "experiment": str(cfg.name),
                "run_ids": ids,
            }
    return pd.DataFrame(list(cells.values()))


def _order(grid: pd.DataFrame) -> dict[tuple[str, str], int]:
    """(method, variant) → position: methods in registry order, variants in the sweep's."""
    methods = {m: i for i, m in enumerate(METHODS)}
    variants = {v: i for i, v in enumerate(dict.fromkeys(grid["variant"]))}
    pairs = dict.fromkeys(zip(grid["method"], grid["variant"]))
    ranked = sorted(pairs, key=lambda p: (methods.get(p[0], len(methods)), variants[p[1]]))
    return {p: i for i, p in enumerate(ranked)}


def summarize(found: pd.DataFrame, grid: pd.DataFrame, task: str, iterate: str = "best") -> pd.DataFrame:
    """One task's table: the ``before`` line, one line per (method, variant) in :func:`_order`,
    the oracle's line; each metric's ``_mean``, ``_ci``, ``_std``, ``seeds``, ``collapsed``,
    ``best``/``tied`` (as :func:`gif_bench.tables.summarize`), plus the study's columns."""
    from . import tables

    columns = tables.table_columns(task)
    metrics = [c.metric for c in columns]
    study_metrics = [c.metric for c in STUDY_COLUMNS]
    prefix = rows.PREFIX[iterate]
    reference = tables.oracle()
    found = found[found["task"] == task]
    mine = grid[grid["task"] == task]
    labels = dict(zip(zip(mine["method"], mine["variant"]), mine["label"]))
    per_seed = found.groupby("seed").first()  # every row of a seed has the same before_ and retrain_
    per_seed = per_seed.assign(seed=per_seed.index)
    lines = [tables._line(tables.BEFORE[0], "", math.nan, per_seed, metrics, rows.PREFIX["before"])]
    order = _order(grid[grid["task"] == task])
    for (method, variant), group in sorted(
        found.groupby(["method", "study_variant"], sort=False), key=lambda kv: order.get(kv[0], len(order))
    ):
        line, by_seed = tables._line(method, variant, float(group["mr"].iloc[0]), group, metrics, prefix)
        own, _ = tables._line(method, variant, math.nan, group, study_metrics, "")
        line.update({k: v for k, v in own.items() if k.startswith(tuple(study_metrics))})
        line["label"] = labels.get((method, variant), variant)
        lines.append((line, by_seed))
    lines.append(tables._line(reference, "", math.nan, per_seed, metrics, rows.PREFIX["retrain"], reference=True))
    table = pd.DataFrame([line for line, _ in lines]).rename(columns={"selector": "variant"})
    table["task"] = task
    table["best"], table["tied"] = tables._best(table, columns, [by_seed for _, by_seed in lines])
    return table


def formatted(table: pd.DataFrame, task: str, bold: tuple[str, str]) -> pd.DataFrame:
    """The table as strings (cells as :func:`gif_bench.tables.formatted`'s)."""
    from . import tables

    out = []
    for _, line in table.iterrows():
        label = line.get("label")
        cells = {
            "method": tables.label(line["method"]),
            "solved by": label if isinstance(label, str) else "–",
            "seeds": str(line["seeds"]),
            "collapsed": "–" if pd.isna(line.get("collapsed", math.nan)) else str(int(line["collapsed"])),
        }
        for column in STUDY_COLUMNS:
            mean, ci = line.get(f"{column.metric}_mean", math.nan), line.get(f"{column.metric}_ci", math.nan)
            if pd.isna(mean):
                cells[STUDY_NAMES[column.metric]] = "–"
            else:
                cells[STUDY_NAMES[column.metric]] = f"{mean:.3g}" + ("" if pd.isna(ci) else f" ± {ci:.2g}")
        best = set(filter(None, str(line["best"]).split(",")))
        tied = set(filter(None, str(line.get("tied", "")).split(",")))
        for metric, better in ((c.metric, c.better) for c in tables.table_columns(task)):
            text = tables._cell(line[f"{metric}_mean"], line[f"{metric}_ci"], tables._digits(metric))
            text = f"{bold[0]}{text}{bold[1]}" if metric in best else text + (tables.TIE if metric in tied else "")
            arrow = {"max": " ↑", "min": " ↓", None: ""}[better]
            cells[f"{metric}{arrow}"] = text
        out.append(cells)
    return pd.DataFrame(out)


def to_latex(table: pd.DataFrame, task: str) -> str:
    from . import tables

    text = formatted(table, task, ("\x00", "\x01")).map(tables._tex)
    text = text.map(lambda s: s.replace("\x00", r"\textbf{").replace("\x01", "}").replace("ρ", r"$\rho$"))
    text.columns = [tables._tex(c).replace("ρ", r"$\rho$") for c in text.columns]
    return text.to_latex(index=False, escape=False, column_format="ll" + "r" * (len(text.columns) - 2))


def paired_against_series(found: pd.DataFrame, task: str, iterate: str = "best") -> pd.DataFrame:
    """Every (method, variant) line of ``task`` against the series on the same seeds, per directed
    metric of the task's table: the same method's series where it has one (GIF, freezing),
    else GIF's (K-FAC, EK-FAC: the paper's method as the paper solved it). ``n`` pairs, the mean
    difference (line − series), its 95 % CI, the paired t-test's p, Wilcoxon's from 6 pairs
    (:func:`gif_bench.stats.paired`) and a verdict (better, worse or tie at p < 0.05)."""
    from . import tables
    from .stats import paired

    prefix = rows.PREFIX[iterate]
    found = found[found["task"] == task]
    groups = {key: g.set_index("seed") for key, g in found.groupby(["method", "study_variant"], sort=False)}
    out = []
    for (method, variant), group in groups.items():
        base_key = (method, SERIES) if (method, SERIES) in groups else ("gif", SERIES)
        if (method, variant) == base_key or base_key not in groups:
            continue
        base = groups[base_key]
        for column in (c for c in tables.table_columns(task) if c.better is not None):
            col = "best_gap_to_retrain" if column.metric == "gap_to_retrain" and prefix else prefix + column.metric
            if column.metric in tables.PER_RUN:
                col = column.metric
            if col not in group or col not in base:
                continue
            result = paired(pd.to_numeric(group[col], errors="coerce"), pd.to_numeric(base[col], errors="coerce"))
            out.append(
                {
                    "task": task,
                    "method": method,
                    "variant": variant,
                    "against": f"{tables.label(base_key[0])} {SERIES}",
                    "metric": column.metric,
                    **vars(result),
                    "verdict": tables._verdict(result.mean_diff, result.p_t, column.better),
                }
            )
    return pd.DataFrame(out)


# Lines joining a method's points: each family with the converged solution (its limit), sorted by ρ.
PATHS = (("ridge", "-"), ("cg_k", "--"), ("kfac_damping", "-"))


def points(found: pd.DataFrame, task: str, iterate: str = "best") -> pd.DataFrame:
    """The figure's points: per (method, variant) of ``task``, the gap to retraining
    (``iterate``'s) as mean and 95 % CI over seeds, and the regularisation ρ as geometric mean
    with the 95 % CI of its logarithm (``x_low``, ``x_high``): ρ spans decades, and varies
    between seeds by a factor (λ_max does)."""
    import numpy as np

    from .stats import mean_ci

    gap = {"best": "best_gap_to_retrain", "final": "gap_to_retrain"}[iterate]
    found = found[found["task"] == task]
    out = []
    for (method, variant), group in found.groupby(["method", "study_variant"], sort=False):
        rho = pd.to_numeric(group.get("regularisation", pd.Series(dtype=float)), errors="coerce").to_numpy(dtype=float)
        rho = rho[np.isfinite(rho) & (rho > 0)]
        log_mean, log_ci = mean_ci(np.log10(rho)) if len(rho) else (math.nan, math.nan)
        log_ci = 0.0 if math.isnan(log_ci) else log_ci
        y, y_ci = mean_ci(pd.to_numeric(group[gap], errors="coerce"))
        family = group["study_family"].iloc[0] if "study_family" in group else ""
        out.append(
            dict(
                method=method,
                variant=variant,
                family=family,
                x=10**log_mean,
                x_low=10 ** (log_mean - log_ci),
                x_high=10 ** (log_mean + log_ci),
                y=y,
                y_ci=y_ci,
                n=len(group),
            )
        )
    return pd.DataFrame(out)


def figure(found: pd.DataFrame, path: Path, iterate: str = "best", title: str = "") -> Path:
    """Gap to retraining against the regularisation strength ρ, one panel per task, one colour
    and marker per method, error bars the 95 % CIs over seeds (both axes, ρ's on its logarithm:
    :func:`points`); the series drawn
    larger with a black edge, the heuristic K-FAC damping likewise; each family of variants
    joined to the converged solution (ridge and K-FAC damping solid, CG-k dashed)."""
    from . import plots
    from .tables import label

    plt = plots.plt
    tasks = [t for t in dict.fromkeys(found["task"])]
    fig, axes = plt.subplots(1, len(tasks), figsize=(6.2 * len(tasks), 4.6), squeeze=False)
    for ax, task in zip(axes[0], tasks):
        pts = points(found, task, iterate)
        for method in (m for m in METHODS if m in set(pts["method"])):
            colour, marker = plots.style(method)
            mine = pts[(pts["method"] == method) & pts["x"].notna() & (pts["x"] > 0)]
            for family, dash in PATHS:
                line = mine[mine["family"].isin((family, "converged"))].sort_values("x")
                if (line["family"] == family).any() and len(line) > 1:
                    ax.plot(line["x"], line["y"], dash, color=colour, linewidth=1, alpha=0.7)
            for _, p in mine.iterrows():
                emphasised = p["variant"] in (SERIES, "kfac_heuristic")
                ax.errorbar(
                    p["x"],
                    p["y"],
                    xerr=[[p["x"] - p["x_low"]], [p["x_high"] - p["x"]]],
                    yerr=None if pd.isna(p["y_ci"]) else p["y_ci"],
                    fmt=marker,
                    color=colour,
                    markersize=9 if emphasised else 6,
                    markeredgecolor="black" if emphasised else colour,
                    capsize=2,
                    elinewidth=0.8,
                )
                if p["variant"] in (SERIES, "converged", "kfac_heuristic"):
                    tag = {"kfac_heuristic": "heuristic"}.get(p["variant"], p["variant"])
                    ax.annotate(tag, (p["x"], p["y"]), textcoords="offset points", xytext=(5, 5), fontsize=7)
            ax.plot([], [], marker, color=colour, label=label(method))
        ax.set_xscale("log")
        ax.set_ylim(bottom=-0.02 * max(ax.get_ylim()[1], 1.0))  # a gap is ≥ 0: a t-interval below it is cut
        ax.set_xlabel("regularisation ρ (cut-off eigenvalue / largest eigenvalue of H)")
        ax.set_ylabel(f"gap to retraining (points, {'best iterate' if iterate == 'best' else 'final iterate'})")
        ax.set_title(TASKS[task].label if task in TASKS else task)
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=8)
    fig.suptitle(title or "Solver study: gap to retraining against regularisation (95 % CIs over seeds)")
    return plots._save(fig, path)


PAIRED_HEADER = (
    "**Paired against the series** (same seeds; GIF and freezing against their own series, K-FAC and "
    "EK-FAC against GIF's; mean of line − series, its 95 % CI, the paired t-test's p, Wilcoxon's p "
    "from 6 pairs on; verdict: better, worse or tied at p < 0.05). Gap to retraining only; every "
    "directed metric in `{name}-paired.csv`."
)
NOTES = (
    "ρ: the eigenvalue of H where the direction's filter cuts, over H's largest (gif_bench/study.py): "
    "CG after k iterations 1/k, ridge by CG √(λ/λ_max(KᵀK) + 1/k²), the series M/√((N+1)λ_max(KᵀK)), "
    "K-FAC μ/√λ_max (λ_max over every Conv/Linear parameter). "
    "cos conv. / cos series: cosine of Δθ with the same method's Δθ on the same problem by CG to 1e-4 / by "
    "the paper's series (K-FAC, EK-FAC: GIF's on the study's J, so |cos| ≤ share_in_reference_j)."
)


def build(overrides: list[str], out: Path | None = None, iterate: str = "best") -> dict:
    """Write the study's tables (Markdown, LaTeX, CSV), paired tests and figure; returns what
    was written and what is missing, as :func:`gif_bench.report.build`."""
    grid = study_grid(overrides)
    cfg = sweeps.compose(sweeps.sweep_jobs(overrides)[0])
    name = str(grid["experiment"].iloc[0])
    found, missing = sweeps.match_grid(rows.collect(cfg.paths.root, name), grid)
    missing = missing[[*GRID_KEYS, "label"]]
    out = Path(out) if out is not None else Path(cfg.paths.root) / "reports"
    written: dict[str, Path] = {}
    header = report_header.header(name, overrides, found, grid, iterate, cfg, varies="the task, its data, the solver")
    gap = ""
    if not missing.empty:
        gap = f"**Incomplete: {len(missing)} runs missing**\n\n{missing.to_markdown(index=False)}\n\n"
    if found.empty:
        return {"name": name, "written": written, "missing": missing, "table": None}
    sections, latex, tables_, pairs = [], [], [], []
    for task in (t for t in dict.fromkeys(grid["task"]) if t in set(found["task"])):
        table = summarize(found, grid, task, iterate)
        task_pairs = paired_against_series(found, task, iterate)
        title = TASKS[task].label if task in TASKS else task
        section = f"## {title}\n\n{formatted(table, task, ('**', '**')).to_markdown(index=False)}\n\n"
        if not task_pairs.empty:
            shown = task_pairs[task_pairs["metric"] == "gap_to_retrain"].drop(columns=["task", "metric"])
            section += PAIRED_HEADER.format(name=name) + "\n\n" + shown.to_markdown(index=False, floatfmt=".3g") + "\n"
        sections.append(section)
        latex.append(f"% {title}\n{to_latex(table, task)}")
        tables_.append(table)
        pairs.append(task_pairs)
    table = pd.concat(tables_, ignore_index=True)
    both = pd.concat(pairs, ignore_index=True)
    written["figure"] = figure(found, out / f"{name}.png", iterate, title=f"{name}: gap to retraining against ρ")
    if not both.empty:
        written["paired"] = storage.write_atomic(out / f"{name}-paired.csv", lambda tmp: both.to_csv(tmp, index=False))
    body = header + gap + NOTES + "\n\n" + "\n".join(sections)
    written["markdown"] = storage.write_text(out / f"{name}.md", body)
    written["latex"] = storage.write_text(out / f"{name}.tex", "\n".join(latex))
    written["csv"] = storage.write_atomic(out / f"{name}.csv", lambda tmp: table.to_csv(tmp, index=False))
    report_header.log_to_wandb(cfg, name, table, written)
    return {"name": name, "written": written, "missing": missing, "table": table}
