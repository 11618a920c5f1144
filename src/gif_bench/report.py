"""Tables and figures of one experiment's sweep, or a listing of result rows.

    python -m gif_bench.report experiment=table1 [profile=cpu] [overrides ...] [--out DIR]
    python -m gif_bench.report --rows [--root outputs] [--experiment quickstart]

Takes the same overrides as the sweep (``python -m gif_bench experiment=table1 ...``), works
out every run that sweep launches, collects their rows from ``paths.root``, lists the cells
that have no ``ok`` row (exit status 1 unless ``--allow-missing``), and writes
``<name>.md`` / ``.csv`` / ``.tex`` and PNG figures to ``--out`` (default
``<paths.root>/reports``). With the W&B logger the tables and figures are also logged, as a
``wandb.Table`` and images, to a run of the experiment's group with job type ``report``.

``--rows`` prints every result row under ``--root`` (one experiment with ``--experiment``) as
a Markdown table of the common columns and each task's columns.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

from . import report_header, rows, storage, sweeps
from .tasks import TASKS

PAIRED_HEADER = (
    "**Paired against GIF** (same seeds, so the same trained model and oracle; mean of line − GIF, "
    "its 95 % CI, the paired t-test's p, Wilcoxon's p from 6 pairs on; verdict: the line is better, "
    "worse or tied at p < 0.05)"
)
IN_ORDER_HEADER = (
    "**The paper's order** (each method against the next in the table, GIF > freezing > projecting > "
    "Koh & Liang > second-order; `better`: the order holds at p < 0.05, `worse`: it is reversed)"
)
SELECTOR_HEADER = (
    "**Selectors against random** (GIF's test accuracy at each MR, same seeds; the paper: highest-k > "
    "random > lowest-k)"
)


def build(overrides: list[str], out: Path | None = None, iterate: str = "best") -> dict:
    """Write the experiment's tables and figures; returns what was written and what is missing."""
    cfg = sweeps.compose(sweeps.sweep_jobs(overrides)[0])  # paths, task and logger are not swept
    if cfg.get("study") is not None:  # the solver study: its own grid (task, method, variant, seed)
        from . import study_report

        return study_report.build(overrides, out, iterate)
    grid = sweeps.expected_grid(overrides)
    name = str(grid["experiment"].iloc[0])
    task = str(cfg.task.name)
    found, missing = sweeps.match_grid(rows.collect(cfg.paths.root, name), grid)
    out = Path(out) if out is not None else Path(cfg.paths.root) / "reports"
    written: dict[str, Path] = {}
    header = report_header.header(name, overrides, found, grid, iterate, cfg)
    if missing.empty:
        gap = ""
    else:
        gap = f"**Incomplete: {report_header.runs(len(missing))} missing**\n\n{missing.to_markdown(index=False)}\n\n"
    if found.empty:
        return {"name": name, "written": written, "missing": missing, "table": None}
    from . import plots, tables  # matplotlib and scipy: only once there is something to report

    if grid.loc[grid["selector"] != "all", "selector"].nunique() > 1:  # the sweep compares selectors
        table = tables.selector_table(found, iterate)
        cells = tables.selector_table(found, iterate, with_ci=True)
        markdown = tables.selector_table_markdown(cells)
        pairs = tables.selector_pairs(found, iterate)
        if not pairs.empty:
            markdown += f"\n\n{SELECTOR_HEADER}\n\n" + pairs.to_markdown(index=False, floatfmt=".3g")
            written["paired"] = storage.write_atomic(
                out / f"{name}-paired.csv", lambda tmp: pairs.to_csv(tmp, index=False)
            )
        latex = tables.selector_table_latex(cells)
        written["figure"] = plots.selector_study(found, out / f"{name}.png", iterate, title=f"{name}: test accuracy")
        written["pareto"] = plots.pareto(found, out / f"{name}-pareto.png", iterate, title=f"{name}: cost and gap")
    else:
        table = tables.summarize(found, task, iterate)
        markdown = tables.to_markdown(table, task)
        pairs = tables.paired_against(found, task, iterate)
        in_order = tables.paired_in_order(found, task, iterate)
        if not pairs.empty:
            markdown += f"\n\n{PAIRED_HEADER}\n\n" + pairs.to_markdown(index=False, floatfmt=".3g")
            markdown += f"\n\n{IN_ORDER_HEADER}\n\n" + in_order.to_markdown(index=False, floatfmt=".3g")
            both = pd.concat([pairs.assign(comparison="against GIF"), in_order.assign(comparison="in order")])
            written["paired"] = storage.write_atomic(
                out / f"{name}-paired.csv", lambda tmp: both.to_csv(tmp, index=False)
            )
            markdown += _changed(overrides, cfg, name, task, iterate, found, pairs, out, written)
        latex = tables.to_latex(table, task)
        written["figure"] = plots.trajectories(found, out / f"{name}-trajectories.png", title=f"{name}: trajectories")
        written["pareto"] = plots.pareto(found, out / f"{name}-pareto.png", iterate, title=f"{name}: cost and gap")
    written["markdown"] = storage.write_text(out / f"{name}.md", header + gap + markdown + "\n")
    written["latex"] = storage.write_text(out / f"{name}.tex", latex)
    written["csv"] = storage.write_atomic(out / f"{name}.csv", lambda tmp: table.to_csv(tmp, index=False))
    report_header.log_to_wandb(cfg, name, table, written)
    return {"name": name, "written": written, "missing": missing, "table": table}


CHANGED_HEADER = (
    "**Verdicts the tuned recipes changed** (each method against GIF, as above, at the published recipes "
    "and at the tuned ones, on the same seeds; the methods and metrics whose verdict differs)"
)


def _changed(overrides, cfg, name: str, task: str, iterate: str, found, pairs, out: Path, written: dict) -> str:
    """Where some methods ran a tuned recipe: the paired verdicts against GIF that differ from
    those of the same sweep at the published recipes (its rows from the same root; those found),
    as a Markdown section, also written to ``<name>-changed.csv``."""
    from . import tables

    if "recipe" not in found or not (found["recipe"] == "tuned").any():
        return ""
    grid = sweeps.expected_grid([*overrides, "recipe=published"])
    published, missing = sweeps.match_grid(rows.collect(cfg.paths.root, name), grid)
    if published.empty:
        return f"\n\n{CHANGED_HEADER}: no runs at the published recipes under `{cfg.paths.root}`\n"
    changed = tables.changed_verdicts(tables.paired_against(published, task, iterate), pairs)
    written["changed"] = storage.write_atomic(out / f"{name}-changed.csv", lambda tmp: changed.to_csv(tmp, index=False))
    note = f" ({report_header.runs(len(missing))} of the published sweep missing)" if len(missing) else ""
    body = changed.to_markdown(index=False, floatfmt=".3g") if len(changed) else "none"
    return f"\n\n{CHANGED_HEADER}{note}\n\n{body}"


ROW_COLUMNS = ("experiment", "task", "method", "selector", "solver", "mr", "seed", "status")
ROW_FIGURES = ("before_test_acc", "test_acc", "before_self_acc", "self_acc")
ROW_COSTS = ("retrain_test_acc", "gap_to_retrain", "steps", "hvps", "solver_residual", "update_seconds")


def _row_figures() -> list[str]:
    """The common figures, each task's table columns, the oracle's test accuracy and the costs."""
    task_columns = [c.metric for task in TASKS.values() for c in task.columns if c.metric not in ROW_COSTS]
    return list(dict.fromkeys((*ROW_FIGURES, *task_columns, *ROW_COSTS)))


def row_listing(root: str | Path, experiment: str | None = None) -> str:
    """Every result row under ``root`` as a Markdown table: the run's settings, the common
    figures, each task's table columns, the oracle's test accuracy and the edit's cost."""
    found = rows.collect(root, experiment)
    if found.empty:
        raise ValueError(f"no result rows under {root}/results")
    wanted = list(dict.fromkeys((*ROW_COLUMNS, *_row_figures())))
    shown = found[[c for c in wanted if c in found.columns]].sort_values(["experiment", "task", "method", "mr", "seed"])
    return shown.to_markdown(index=False, floatfmt=".3g")


SEED_GROUP = ("experiment", "task", "dataset", "method", "selector", "mr")


def over_seeds(root: str | Path, experiment: str | None = None) -> str:
    """The rows of :func:`row_listing` grouped over seeds: each figure as median [min, max] and
    the number of seeds, the form the README quotes single runs in."""
    found = rows.collect(root, experiment)
    found = found[found["status"] == "ok"] if "status" in found else found
    if found.empty:
        raise ValueError(f"no ok result rows under {root}/results")
    figures = [
        c for c in _row_figures() if c in found.columns and pd.to_numeric(found[c], errors="coerce").notna().any()
    ]
    keys = [k for k in SEED_GROUP if k in found.columns]
    lines = []
    for key, group in found.groupby(keys, sort=True, dropna=False):
        line = dict(zip(keys, key)) | {"seeds": group["seed"].nunique()}
        for column in figures:
            values = pd.to_numeric(group[column], errors="coerce").dropna()
            line[column] = f"{values.median():.3g} [{values.min():.3g}, {values.max():.3g}]" if len(values) else ""
        lines.append(line)
    return pd.DataFrame(lines).to_markdown(index=False)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m gif_bench.report", description=__doc__.splitlines()[0])
    parser.add_argument("overrides", nargs="*", help="the sweep's overrides, e.g. experiment=table1 profile=cpu")
    parser.add_argument("--out", type=Path, default=None, help="folder for the files (default <paths.root>/reports)")
    parser.add_argument("--iterate", choices=("best", "final"), default="best")
    parser.add_argument("--allow-missing", action="store_true", help="exit 0 even if some runs have no row")
    parser.add_argument("--rows", action="store_true", help="list the result rows under --root instead")
    parser.add_argument("--root", default="outputs", help="with --rows: paths.root of the runs (default outputs)")
    parser.add_argument("--experiment", default=None, help="with --rows: only this experiment")
    parser.add_argument("--over-seeds", action="store_true", help="with --rows: median [min, max] over seeds")
    args = parser.parse_args(argv)
    if args.rows:
        try:
            print((over_seeds if args.over_seeds else row_listing)(args.root, args.experiment))
        except ValueError as err:
            print(f"gif-bench report: error: {err}", file=sys.stderr)
            return 1
        return 0
    if not args.overrides:
        parser.error("give the sweep's overrides (e.g. experiment=table1), or --rows")
    from hydra.errors import HydraException

    try:
        report = build(args.overrides, args.out, args.iterate)
    except (HydraException, ValueError) as err:  # a bad override or sweep: one line, as the runs do
        message = " ".join(str(err).split("Config search path")[0].split())
        print(f"gif-bench report: error: {message}", file=sys.stderr)
        return 2
    for kind, path in report["written"].items():
        print(f"{kind}: {path}")
    if not report["missing"].empty:
        print(f"{report['name']}: {report_header.runs(len(report['missing']))} missing:", file=sys.stderr)
        print(report["missing"].to_string(index=False), file=sys.stderr)
        return 0 if args.allow_missing else 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
