"""The bracketing line search against the paper's every-step one, paired on the same seeds (the
same trained models, oracles and directions): where does ``update.search=bracket`` stop, what
does it report, and what does it save?

    python scripts/line_search_pairs.py [--out FILE.md] -- experiment=table1 profile=cpu \
        method=gif,freezing,kfac,ekfac paths.root=<runs>

Runs nothing: it reads the rows of the sweep with ``update.search=linear`` and with
``update.search=bracket`` (run both first, e.g. ``python -m gif_bench ... update.search=linear,bracket``)
and pairs them per method (bracket − linear: mean, 95 % CI, paired t-test's p; ``same`` counts
the seeds where the two agree exactly).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

from gif_bench import rows, stats, sweeps
from gif_bench.report_header import machine

METRICS = ("steps", "best_step", "gap_to_retrain", "best_gap_to_retrain", "test_acc", "best_test_acc", "self_acc")
COSTS = ("search_seconds", "edit_seconds", "eval_forwards", "speedup_vs_retrain")


def collected(overrides: list[str], search: str) -> pd.DataFrame:
    sweep = [*overrides, f"update.search={search}"]
    grid = sweeps.expected_grid(sweep)
    cfg = sweeps.compose(sweeps.sweep_jobs(sweep)[0])
    found, missing = sweeps.match_grid(rows.collect(cfg.paths.root, str(grid["experiment"].iloc[0])), grid)
    if not missing.empty:
        raise SystemExit(f"update.search={search}: {len(missing)} of {len(grid)} runs have no ok row; run them first")
    return found[found["search"] == search]


def pairs(linear: pd.DataFrame, bracket: pd.DataFrame) -> pd.DataFrame:
    out = []
    for method, lin in linear.groupby("method", sort=False):
        brk = bracket[bracket["method"] == method].set_index("seed")
        lin = lin.set_index("seed")
        for metric in (*METRICS, *COSTS):
            a = pd.to_numeric(brk[metric], errors="coerce")
            b = pd.to_numeric(lin[metric], errors="coerce")
            result = stats.paired(a, b)
            same = int((a.reindex(b.index) == b).sum())
            out.append(dict(method=method, metric=metric, linear=b.mean(), bracket=a.mean(), **vars(result), same=same))
    return pd.DataFrame(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()
    linear, bracket = collected(args.overrides, "linear"), collected(args.overrides, "bracket")
    table = pairs(linear, bracket)
    stops = pd.crosstab(
        linear.set_index(["method", "seed"])["stop_reason"], bracket.set_index(["method", "seed"])["stop_reason"]
    )
    text = (
        "# update.search=bracket against linear, paired on seeds\n\n"
        f"- runs: `python -m gif_bench {' '.join(args.overrides)} update.search=linear,bracket`\n"
        f"- pairs: `python scripts/line_search_pairs.py -- {' '.join(args.overrides)}`\n"
        f"- {linear['seed'].nunique()} seeds; bracket − linear, mean and 95 % CI (Student t), paired t-test's p;"
        " `same`: seeds where both give the same value\n"
        f"- machine: {machine()}\n\n"
        + table.to_markdown(index=False, floatfmt=".3g")
        + "\n\n**Stop reasons** (rows: linear, columns: bracket; runs)\n\n"
        + stops.to_markdown()
        + "\n"
    )
    if args.out:
        args.out.write_text(text)
    sys.stdout.write(text)


if __name__ == "__main__":
    main()
