"""Result rows: one JSON file per run under ``<paths.root>/results/<experiment>/<run_id>.json``
(a tuning trial's under ``tuning/``),
written atomically, identified by a hash of the config (``run_id``, computed where the config
becomes settings, :func:`gif_bench.config.run_id`), collected into a DataFrame."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from . import storage
from .settings import Run

# A row describes four models with the same metric names, told apart by a prefix (README, "Where
# things go"): the final iterate (none), the best iterate on validation, the model before the
# edit and the oracle retrained without U. Rows are written and read through these.
PREFIX = {"final": "", "best": "best_", "before": "before_", "retrain": "retrain_"}


def column(metric: str, model: str = "final") -> str:
    """The row's column of ``metric`` for ``model`` (a key of :data:`PREFIX`)."""
    return PREFIX[model] + metric


def prefixed(model: str, values: dict[str, Any], keys) -> dict[str, Any]:
    """``values``' ``keys`` (those present) as the row's columns for ``model``."""
    return {column(k, model): values[k] for k in keys if k in values}


def row_path(run: Run) -> Path:
    """Where ``run``'s row is written: ``results/`` for a run, ``tuning/`` for a tuning trial
    (which no table reads)."""
    folder = "tuning" if run.tune else "results"
    return Path(run.paths.root) / folder / run.name / f"{run.run_id}.json"


def read_row(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None


def finished(run: Run) -> dict[str, Any] | None:
    """The existing ``ok`` row of this configuration, if there is one."""
    row = read_row(row_path(run))
    return row if row and row.get("status") == "ok" else None


def write_row(run: Run, row: dict[str, Any]) -> Path:
    return storage.write_json(row_path(run), row)


def collect(root: str | Path, experiment: str | None = None):
    """Every result row under ``<root>/results`` (optionally one experiment) as a DataFrame.

    Unreadable files are skipped; the per-step ``trajectory`` column is kept as lists.
    """
    import pandas as pd

    folder = Path(root) / "results"
    pattern = f"{experiment}/*.json" if experiment else "*/*.json"
    rows = [row for path in sorted(folder.glob(pattern)) if (row := read_row(path)) is not None]
    return pd.DataFrame(rows)
