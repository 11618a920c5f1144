"""Sweeps: the jobs a multirun launches, and the grid of distinct runs a report expects.

``compose`` gives the config ``python -m gif_bench <overrides>`` would run; ``sweep_jobs`` the
jobs of a multirun, as Hydra's basic sweeper would launch them.
"""

from __future__ import annotations

import copy
import functools
import importlib.resources
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ConfigAttributeError, ConfigKeyError

from . import CONFIG_MODULE


@contextmanager
def _composer():
    """A function composing the config ``python -m gif_bench <overrides>`` would run, valid
    inside the ``with`` block (Hydra's global state is restored after it; inside a running
    ``python -m gif_bench`` the app's own, which reads the same config module).

    Hydra composes in two stages: the defaults tree from the config-group overrides, then the
    remaining ``key=value`` overrides applied in order to the merged config. A grid's jobs share
    their group choices and differ in values (``mr``, ``seed``), so the first stage is done once
    per distinct set of group overrides and copied; the second is the same ``OmegaConf.update``
    Hydra applies. Overrides of any other kind (``+key``, ``~key``, ``hydra.*``, packages) and
    requests for the Hydra node take Hydra's own path.
    """
    from hydra import compose, initialize_config_module
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.core.override_parser.types import OverrideType

    parser = OverridesParser.create()
    trees: dict[tuple[str, ...], DictConfig] = {}

    def is_value(o) -> bool:
        key = o.key_or_group
        return (
            o.type == OverrideType.CHANGE
            and o.package is None
            and not o.is_sweep_override()
            and "/" not in key
            and not key.startswith("hydra")
            and ("." in key or not _is_group(key))
        )

    def composer(overrides: list[str], hydra: bool = False) -> DictConfig:
        parsed = parser.parse_overrides(list(overrides))
        values = [o for o in parsed if is_value(o)]
        if hydra or any(not is_value(o) and not _is_group(o.key_or_group) for o in parsed):
            return compose("config", overrides=list(overrides), return_hydra_config=hydra)
        tree = tuple(o.input_line for o in parsed if not is_value(o))
        if tree not in trees:
            trees[tree] = compose("config", overrides=list(tree))
        cfg = copy.deepcopy(trees[tree])
        for o in values:
            try:
                OmegaConf.update(cfg, o.key_or_group, o.value(), merge=True)
            except (ConfigAttributeError, ConfigKeyError):  # Hydra's own message for a key that is not there
                return compose("config", overrides=list(overrides))
        return cfg

    from hydra.core.global_hydra import GlobalHydra

    if GlobalHydra.instance().is_initialized():  # inside a running app (callbacks.py): its search path
        yield composer
        return
    with initialize_config_module(config_module=CONFIG_MODULE, version_base="1.3"):
        yield composer


def compose(overrides: list[str], hydra: bool = False) -> DictConfig:
    """The config ``python -m gif_bench <overrides>`` would run (no sweep values in ``overrides``)."""
    with _composer() as composer:
        return composer(overrides, hydra)


def compose_each(jobs: list[list[str]]) -> Iterator[DictConfig]:
    """The config of each job of ``jobs`` in turn, composing each distinct defaults tree once
    (a sweep's jobs share theirs): seconds for hundreds of jobs."""
    with _composer() as composer:
        for job in jobs:
            yield composer(job)


def sweep_jobs(overrides: list[str]) -> list[list[str]]:
    """The jobs a multirun of ``overrides`` launches, each as its list of overrides.

    The config's ``hydra.sweeper.params`` come first and the command line's overrides after
    them (a key given on both takes the command line's values), combined as Hydra's basic
    sweeper combines them: the Cartesian product, last key varying fastest.
    """
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parser = OverridesParser.create()
    fixed = [o.input_line for o in parser.parse_overrides(list(overrides)) if not o.is_sweep_override()]
    params = [f"{k}={v}" for k, v in (compose(fixed, hydra=True).hydra.sweeper.params or {}).items()]
    parsed = parser.parse_overrides(params + list(overrides))
    return _cartesian_product(parsed)


def _cartesian_product(parsed: list) -> list[list[str]]:
    """Hydra's basic sweeper's expansion of parsed overrides into jobs.

    The one use of Hydra's private API (``hydra._internal``): Hydra exposes no public function
    for it. ``tests/test_experiments.py`` fails if Hydra moves or changes it.
    """
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper

    return BasicSweeper.split_arguments(parsed, max_batch_size=None)[0]


@functools.cache
def _is_group(key: str) -> bool:
    """Whether ``key`` names one of gif-bench's config groups (Hydra's own groups are under ``hydra/``)."""
    return (importlib.resources.files(CONFIG_MODULE) / key).is_dir()


GRID_KEYS = ("method", "mr", "selector", "seed")


def device_run_ids(cfg: DictConfig, here: str) -> list[str]:
    """The run ids ``cfg`` is recorded under: its device's, or for ``device=auto`` this
    machine's device type first and then every other's (a run made elsewhere counts too).
    Sets ``cfg.device`` as it goes."""
    from .config import run_id

    devices = [here, *({"cpu", "cuda", "mps"} - {here})] if cfg.device == "auto" else [cfg.device]
    ids = []
    for device in devices:
        cfg.device = device
        ids.append(run_id(cfg))
    return ids


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
            ids = device_run_ids(cfg, here)
            if key in cells and cells[key]["run_ids"] != ids:
                raise ValueError(
                    f"the sweep runs {dict(zip(GRID_KEYS, key))} more than once with other settings; "
                    "report one setting at a time (sweep only method, mr, selector and seed)"
                )
            cells[key] = {**dict(zip(GRID_KEYS, key)), "experiment": str(cfg.name), "run_ids": ids}
    return pd.DataFrame(list(cells.values()))


def match_grid(rows, grid):
    """Split ``grid`` against the collected ``rows``: (one ok row per cell that has one, the
    cells that have none, each with the ``error`` of its failed row or "not run"). A cell takes
    the row of its first run id that has an ok row, so a run made on two devices counts once."""
    import pandas as pd

    ok = rows[rows["status"] == "ok"].drop_duplicates("run_id") if len(rows) else rows
    by_id = ok.set_index("run_id", drop=False) if len(ok) else None
    chosen, missing = [], []
    for i, candidates in enumerate(grid["run_ids"]):
        hit = next((c for c in candidates if by_id is not None and c in by_id.index), None)
        (missing if hit is None else chosen).append(i if hit is None else by_id.loc[hit])
    chosen_rows = pd.DataFrame(chosen).reset_index(drop=True) if chosen else ok.iloc[0:0]
    errors = rows.drop_duplicates("run_id").set_index("run_id")["error"].dropna() if "error" in rows else {}
    why = [next((errors[c] for c in grid["run_ids"].iloc[i] if c in errors), "not run") for i in missing]
    return chosen_rows, grid.iloc[missing].drop(columns="run_ids").reset_index(drop=True).assign(error=why)
