"""Result rows: one JSON file per run under ``<paths.root>/results/<experiment>/<run_id>.json``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from . import storage

# Keys that change where or how a run is recorded, not what it computes.
NOT_IN_RUN_ID = ("paths", "logger", "force", "save_edited", "hydra", "profile")


def run_id(cfg: DictConfig) -> str:
    """Hash of the resolved config without logging, paths and ``force``; ``device: auto`` is
    replaced by the device type it resolves to, so CPU and GPU results are kept apart."""
    from .config import resolve_device

    spec = OmegaConf.to_container(cfg, resolve=True)
    for key in NOT_IN_RUN_ID:
        spec.pop(key, None)
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


def _composer():
    """A function composing the config ``python -m gif_bench <overrides>`` would run."""
    from hydra import compose
    from hydra.core.global_hydra import GlobalHydra
    from hydra.initialize import initialize_config_dir

    conf = Path(__file__).resolve().parents[2] / "conf"
    GlobalHydra.instance().clear()
    initialize_config_dir(config_dir=str(conf), version_base="1.3")

    def composer(overrides: list[str], hydra: bool = False) -> DictConfig:
        return compose("config", overrides=list(overrides), return_hydra_config=hydra)

    return composer


def compose(overrides: list[str], hydra: bool = False) -> DictConfig:
    """The config ``python -m gif_bench <overrides>`` would run."""
    return _composer()(overrides, hydra)


def sweep_jobs(overrides: list[str], composer=None) -> list[list[str]]:
    """The jobs a multirun of ``overrides`` launches, each as its list of overrides.

    The config's ``hydra.sweeper.params`` come first and the command line's overrides after
    them (a key given on both takes the command line's values), combined as Hydra's basic
    sweeper combines them: the Cartesian product, last key varying fastest.
    """
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser

    composer = composer or _composer()
    parser = OverridesParser.create()
    fixed = [o.input_line for o in parser.parse_overrides(list(overrides)) if not o.is_sweep_override()]
    params = [f"{k}={v}" for k, v in (composer(fixed, hydra=True).hydra.sweeper.params or {}).items()]
    parsed = parser.parse_overrides(params + list(overrides))
    return BasicSweeper.split_arguments(parsed, max_batch_size=None)[0]


GRID_KEYS = ("method", "mr", "selector", "seed")


def expected_grid(overrides: list[str]):
    """One row per distinct run of the sweep ``overrides`` describes: ``method``, ``mr``,
    ``selector``, ``seed``, the experiment ``name`` and ``run_ids`` (the run ids it can have:
    with ``device: auto`` one per device type, since ids keep CPU and GPU results apart)."""
    import pandas as pd

    from .config import canonicalize

    composer = _composer()
    cells: dict[tuple, dict[str, Any]] = {}
    for job in sweep_jobs(overrides, composer):
        cfg = canonicalize(composer(job))
        key = (cfg.method.name, float(cfg.mr), cfg.selector.name, int(cfg.seed))
        if key in cells:
            continue
        ids = set()
        for device in ("cpu", "cuda", "mps") if cfg.device == "auto" else (cfg.device,):
            cfg.device = device
            ids.add(run_id(cfg))
        cells[key] = {**dict(zip(GRID_KEYS, key)), "experiment": str(cfg.name), "run_ids": sorted(ids)}
    return pd.DataFrame(list(cells.values()))


def match_grid(rows, grid):
    """Split ``grid`` against the collected ``rows``: (the ok rows of the grid's runs, the grid's
    cells that have no ok row). A cell matches a row by run id."""
    ok = rows[rows["status"] == "ok"] if len(rows) else rows
    ids = set(ok["run_id"]) if len(ok) else set()
    found = grid["run_ids"].map(lambda candidates: any(i in ids for i in candidates))
    wanted = {i for candidates in grid["run_ids"] for i in candidates}
    chosen = ok[ok["run_id"].isin(wanted)] if len(ok) else ok
    return chosen.reset_index(drop=True), grid[~found].drop(columns="run_ids").reset_index(drop=True)
