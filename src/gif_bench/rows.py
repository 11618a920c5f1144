"""Result rows: one JSON file per run under ``<paths.root>/results/<experiment>/<run_id>.json``,
written atomically, identified by a hash of the config, collected into a DataFrame."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from . import storage

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


# Keys that change where or how a run is recorded, not what it computes.
# paper_series reaches the run only through solver=authors, whose resolved keys are hashed; the
# solver study's study_grid only through the solver's and the method's damping (experiment=solver_study).
NOT_IN_RUN_ID = ("paths", "logger", "force", "save_edited", "hydra", "profile", "paper_series", "study_grid")
# Nested keys of the same kind: update.eval_every sets how densely the trajectory records the
# test splits, not the final or best iterate (tests/test_line_search.py).
NOT_IN_RUN_ID_NESTED = ("update.eval_every",)
# Options hashed only away from the value that computes what runs did before they existed, so
# that adding one keeps every earlier run id (and its rows and cached results).
HASHED_UNLESS = {"update.search": "linear"}


def _pop(spec: dict, dotted: str, unless: object = None, always: bool = True) -> None:
    *parents, leaf = dotted.split(".")
    for key in parents:
        spec = spec.get(key) if isinstance(spec, dict) else None
    if isinstance(spec, dict) and leaf in spec and (always or spec[leaf] == unless):
        del spec[leaf]


def run_id(cfg: DictConfig) -> str:
    """Hash of the resolved config without the keys of :data:`NOT_IN_RUN_ID`; ``device: auto`` is
    replaced by the device type it resolves to, so CPU and GPU results are kept apart."""
    from .config import resolve_device

    spec = OmegaConf.to_container(cfg, resolve=True)
    for key in NOT_IN_RUN_ID:
        spec.pop(key, None)
    for key in NOT_IN_RUN_ID_NESTED:
        _pop(spec, key)
    for key, value in HASHED_UNLESS.items():
        _pop(spec, key, unless=value, always=False)
    spec["device"] = resolve_device(str(cfg.device)).type
    return storage.digest(spec, length=12)


def row_path(cfg: DictConfig) -> Path:
    return Path(cfg.paths.root) / "results" / str(cfg.name) / f"{run_id(cfg)}.json"


def read_row(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None


def finished(cfg: DictConfig) -> dict[str, Any] | None:
    """The existing ``ok`` row of this configuration, if there is one."""
    row = read_row(row_path(cfg))
    return row if row and row.get("status") == "ok" else None


def write_row(cfg: DictConfig, row: dict[str, Any]) -> Path:
    return storage.write_json(row_path(cfg), row)


def collect(root: str | Path, experiment: str | None = None):
    """Every result row under ``<root>/results`` (optionally one experiment) as a DataFrame.

    Unreadable files are skipped; the per-step ``trajectory`` column is kept as lists.
    """
    import pandas as pd

    folder = Path(root) / "results"
    pattern = f"{experiment}/*.json" if experiment else "*/*.json"
    rows = [row for path in sorted(folder.glob(pattern)) if (row := read_row(path)) is not None]
    return pd.DataFrame(rows)
