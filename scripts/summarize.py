"""Print the result rows under a results root as a Markdown table.

python scripts/summarize.py [--root outputs] [--experiment quickstart]
"""

from __future__ import annotations

import argparse

from gif_bench.results import collect

COLUMNS = [
    "experiment",
    "task",
    "method",
    "selector",
    "solver",
    "mr",
    "seed",
    "status",
    "before_test_acc",
    "test_acc",
    "before_self_acc",
    "self_acc",
    "forget_test_acc",
    "changed_new_acc",
    "clean_acc",
    "attack_success",
    "relabel_acc",
    "f1",
    "retrain_test_acc",
    "gap_to_retrain",
    "steps",
    "hvps",
    "solver_residual",
    "update_seconds",
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", default="outputs", help="paths.root of the runs (default: outputs)")
    parser.add_argument("--experiment", default=None, help="only this experiment name")
    args = parser.parse_args()
    df = collect(args.root, args.experiment)
    if df.empty:
        raise SystemExit(f"no result rows under {args.root}/results")
    shown = df[[c for c in COLUMNS if c in df.columns]].sort_values(["experiment", "task", "method", "mr", "seed"])
    print(shown.to_markdown(index=False, floatfmt=".3g"))


if __name__ == "__main__":
    main()
