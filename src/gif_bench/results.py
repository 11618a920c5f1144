"""Result rows: one JSON file per run under ``<paths.root>/results/<experiment>/<run_id>.json``."""

from __future__ import annotations

import json
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from . import storage

# Keys that change where or how a run is recorded, not what it computes.
NOT_IN_RUN_ID = ("paths", "logger", "force", "save_edited", "hydra", "profile")


def run_id(cfg: DictConfig) -> str:
    """Hash of the resolved config without the keys of :data:`NOT_IN_RUN_ID`; ``device: auto`` is
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


@contextmanager
def _composer():
    """A function composing the config ``python -m gif_bench <overrides>`` would run, valid
    inside the ``with`` block (Hydra's global state is restored after it)."""
    from hydra import compose, initialize_config_dir

    conf = Path(__file__).resolve().parents[2] / "conf"
    with initialize_config_dir(config_dir=str(conf), version_base="1.3"):
        yield lambda overrides, hydra=False: compose("config", overrides=list(overrides), return_hydra_config=hydra)


def compose(overrides: list[str], hydra: bool = False) -> DictConfig:
    """The config ``python -m gif_bench <overrides>`` would run (no sweep values in ``overrides``)."""
    with _composer() as composer:
        return composer(overrides, hydra)


def sweep_jobs(overrides: list[str]) -> list[list[str]]:
    """The jobs a multirun of ``overrides`` launches, each as its list of overrides.

    The config's ``hydra.sweeper.params`` come first and the command line's overrides after
    them (a key given on both takes the command line's values), combined as Hydra's basic
    sweeper combines them: the Cartesian product, last key varying fastest.
    """
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parser = OverridesParser.create()
    fixed = [o.input_line for o in parser.parse_overrides(list(overrides)) if not o.is_sweep_override()]
    params = [f"{k}={v}" for k, v in (compose(fixed, hydra=True).hydra.sweeper.params or {}).items()]
    parsed = parser.parse_overrides(params + list(overrides))
    return BasicSweeper.split_arguments(parsed, max_batch_size=None)[0]


GRID_KEYS = ("method", "mr", "selector", "seed")


def expected_grid(overrides: list[str]):
    """One row per distinct run of the sweep ``overrides`` describes: ``method``, ``mr``,
    ``selector``, ``seed`` (as the run records them, see :func:`config.canonicalize`), the
    experiment ``name`` and ``run_ids``, the ids the run can have: with ``device: auto`` one per
    device type (ids keep CPU and GPU results apart), this machine's first.

    Raises ``ValueError`` if two distinct runs share the grid keys: tables are indexed by them,
    so a sweep over anything else (a solver, a rate) is reported one setting at a time.
    """
    import pandas as pd

    from .config import canonicalize, resolve_device

    here = resolve_device("auto").type
    jobs = sweep_jobs(overrides)
    cells: dict[tuple, dict[str, Any]] = {}
    with _composer() as composer:
        for job in jobs:
            cfg = canonicalize(composer(job))
            key = (cfg.method.name, float(cfg.mr), cfg.selector.name, int(cfg.seed))
            devices = [here, *({"cpu", "cuda", "mps"} - {here})] if cfg.device == "auto" else [cfg.device]
            ids = []
            for device in devices:
                cfg.device = device
                ids.append(run_id(cfg))
            if key in cells and cells[key]["run_ids"] != ids:
                raise ValueError(
                    f"the sweep runs {dict(zip(GRID_KEYS, key))} more than once with other settings; "
                    "report one setting at a time (sweep only method, mr, selector and seed)"
                )
            cells[key] = {**dict(zip(GRID_KEYS, key)), "experiment": str(cfg.name), "run_ids": ids}
    return pd.DataFrame(list(cells.values()))


def match_grid(rows, grid):
    """Split ``grid`` against the collected ``rows``: (one ok row per cell that has one, the
    cells that have none). A cell takes the row of its first run id that has an ok row, so a
    run made on two devices counts once."""
    import pandas as pd

    ok = rows[rows["status"] == "ok"].drop_duplicates("run_id") if len(rows) else rows
    by_id = ok.set_index("run_id", drop=False) if len(ok) else None
    chosen, missing = [], []
    for i, candidates in enumerate(grid["run_ids"]):
        hit = next((c for c in candidates if by_id is not None and c in by_id.index), None)
        (missing if hit is None else chosen).append(i if hit is None else by_id.loc[hit])
    chosen_rows = pd.DataFrame(chosen).reset_index(drop=True) if chosen else ok.iloc[0:0]
    return chosen_rows, grid.iloc[missing].drop(columns="run_ids").reset_index(drop=True)
