"""Where one run's seconds go, end to end: the run under cProfile, its phases' cumulative
seconds (the edit's own and everything around it).

    python scripts/run_overheads.py experiment=quickstart force=true [overrides ...]

Run it with the models cached (a first run trains them) so that training does not hide the
rest, and with ``force=true`` (the second run repeats the first). Each phase is one function's
cumulative time; they nest (the edit holds its solve and line search, the line search its
reporting evaluations), so they do not add up to the total.
"""

from __future__ import annotations

import cProfile
import io
import pstats
import sys
import time

from gif_bench import sweeps

# (phase, module file suffix, function name) in the order a run meets them
PHASES = (
    ("validate and canonicalize the config", "gif_bench/config.py", "validate"),
    ("load the dataset", "gif_bench/data.py", "load"),
    ("W&B: start the run", "gif_bench/tracking.py", "start"),
    ("train or load the model and the oracle", "gif_bench/train.py", "train_or_load"),
    ("the oracle's reference distributions", "gif_bench/oracle.py", "of"),
    ("evaluate a reported model (task + oracle metrics)", "gif_bench/runner.py", "report"),
    ("oracle-relative metrics (KL, agreement, MIA)", "gif_bench/oracle.py", "against_oracle"),
    ("... of which the membership-inference fit", "gif_bench/oracle.py", "mia_efficacy"),
    ("every accuracy and loss (the line search's included)", "gif_bench/metrics.py", "accuracies_and_losses"),
    ("time one gradient and one forward (cost units)", "gif_bench/runner.py", "_unit_costs"),
    ("the edit: select and solve", "gif_bench/editing.py", "influence_direction"),
    ("the edit: line search (linear)", "gif_bench/line_search.py", "apply_updates"),
    ("the edit: line search (bracket)", "gif_bench/line_search.py", "bracket_updates"),
    ("... of which the reported iterates' evaluation", "gif_bench/line_search.py", "complete"),
    ("the edit: an unlearner's epochs", "gif_bench/unlearning.py", "unlearn"),
    ("W&B: finish the run", "gif_bench/tracking.py", "finish"),
    ("write the row", "gif_bench/rows.py", "write_row"),
    ("the run (runner.run)", "gif_bench/runner.py", "run"),
)


def phases(stats: pstats.Stats) -> list[tuple[str, int, float]]:
    """(phase, calls, cumulative seconds) of every phase that ran."""
    out = []
    for phase, suffix, name in PHASES:
        calls, seconds = 0, 0.0
        for (path, _line, function), (_cc, nc, _tt, ct, _callers) in stats.stats.items():  # type: ignore[attr-defined]
            if function == name and path.replace("\\", "/").endswith(suffix):
                calls, seconds = calls + nc, seconds + ct
        if calls:
            out.append((phase, calls, seconds))
    return out


def main(argv: list[str]) -> int:
    """Profile the run twice in one process: the first pays for imports and services once (W&B's,
    the dataset's files); the second is what each further job of a multirun costs."""
    from gif_bench import runner

    cfg = sweeps.compose(sweeps.sweep_jobs(argv)[0])
    columns, rows = [], []
    for _ in range(2):
        profiler = cProfile.Profile()
        start = time.perf_counter()
        rows.append(profiler.runcall(runner.run, cfg.copy()))
        wall = time.perf_counter() - start
        columns.append({**{p: s for p, _c, s in phases(pstats.Stats(profiler, stream=io.StringIO()))}, "wall": wall})
    print(f"# one run, profiled twice in one process: python scripts/run_overheads.py {' '.join(argv)}\n")
    print("| phase | first run (s) | a further run (s) |\n|---|---|---|")
    for phase, *_ in (*PHASES, ("wall",)):
        if phase in columns[0] or phase in columns[1]:
            cells = [f"{c[phase]:.2f}" if phase in c else "–" for c in columns]
            name = "wall time of the profiled call" if phase == "wall" else phase
            print(f"| {name} | {cells[0]} | {cells[1]} |")
    keys = ("edit_seconds", "solve_seconds", "search_seconds", "report_seconds", "total_seconds", "steps")
    for label, row in zip(("first", "further"), rows):
        print(f"\n{label}: " + ", ".join(f"{k} {row[k]:.2f}" for k in keys if isinstance(row.get(k), (int, float))))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
