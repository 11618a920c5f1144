"""The solver study's question, paired on the same seeds: does GIF beat or tie K-FAC whatever
it is solved by, or does the verdict follow the solver? Every GIF variant against K-FAC at
kronfluence's damping (the tables' K-FAC), on each task's gap to retraining (best iterate).

    python scripts/solver_study_pairs.py [--metric best_gap_to_retrain] -- experiment=solver_study profile=cpu \
        paths.root=<the study's> [seed=0,1,2]

Only the rows of the study's own grid count (``study_report.study_grid``, as its report).
"""

from __future__ import annotations

import argparse

import pandas as pd

from gif_bench import rows, stats, sweeps
from gif_bench.study_report import study_grid


def pairs(frame: pd.DataFrame, metric: str, against: tuple[str, str]) -> pd.DataFrame:
    out = []
    for task, by_task in frame.groupby("task"):
        reference = by_task[(by_task["method"] == against[0]) & (by_task["study_variant"] == against[1])]
        reference = reference.set_index("seed")[metric]
        for (method, variant), line in by_task.groupby(["method", "study_variant"]):
            if (method, variant) == against:
                continue
            result = stats.paired(line.set_index("seed")[metric], reference)
            out.append(dict(task=task, method=method, variant=variant, **vars(result)))
    return pd.DataFrame(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--metric", default="best_gap_to_retrain")
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()
    grid = study_grid(args.overrides)
    cfg = sweeps.compose(sweeps.sweep_jobs(args.overrides)[0])
    frame, _ = sweeps.match_grid(rows.collect(cfg.paths.root, str(grid["experiment"].iloc[0])), grid)
    frame = frame[frame["status"] == "ok"]
    table = pairs(frame, args.metric, ("kfac", "kfac_heuristic"))
    print(f"{args.metric}: line − K-FAC (kronfluence's damping), paired on seeds")
    print(table.to_markdown(index=False, floatfmt=".3g"))


if __name__ == "__main__":
    main()
