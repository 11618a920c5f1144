"""Tolerance curve of a solve: the same edit with the solver stopped at each relative residual.

Each point is a full run of the harness (same trained model and oracle, from the cache) with
``solver.tol`` set, printed as one JSON line: the solve's products and residual, the edit's
seconds and steps, and the final iterate against the retrained model. Used to size a
tolerance: the loosest one whose edit is within noise of the tightest one's.

    python scripts/tolerance_curve.py --tols 1e-1 1e-2 1e-3 1e-4 -- experiment=quickstart
"""

from __future__ import annotations

import argparse
import json

from gif_bench import quiet_torch_warnings, runner, sweeps

quiet_torch_warnings()

FIELDS = (
    "hvps",
    "solver_iterations",
    "solver_residual",
    "solver_converged",
    "solve_seconds",
    "edit_seconds",
    "retrain_seconds",
    "speedup_vs_retrain",
    "steps",
    "stop_reason",
    "test_acc",
    "self_acc",
    "gap_to_retrain",
    "best_gap_to_retrain",
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tols", type=float, nargs="+", required=True)
    parser.add_argument("--max-iter", type=int, default=2000, help="solver.max_iter for every point")
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()
    for tol in args.tols:
        cfg = sweeps.compose(
            [*args.overrides, f"solver.tol={tol}", f"solver.max_iter={args.max_iter}", "force=true", "logger=none"]
        )
        row = runner.run(cfg)
        print(json.dumps({"tol": tol, **{k: row.get(k) for k in FIELDS}}), flush=True)


if __name__ == "__main__":
    main()
