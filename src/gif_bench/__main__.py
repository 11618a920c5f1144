"""``python -m gif_bench [overrides]``: the Hydra entry point around :func:`gif_bench.runner.run`."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from . import CONFIG_MODULE, quiet_torch_warnings
from .callbacks import FAILED
from .errors import RunFailed, UserError
from .storage import write_json
from .tuning import FAILED_OBJECTIVE, TRIAL_FILE, TRIAL_KEYS

quiet_torch_warnings()

HYDRA_BOOKKEEPING = {".hydra", "__main__.log", "gif_bench.log"}


def _discard_run_dir(root: Path) -> None:
    """Remove this job's Hydra output folder if it holds nothing but Hydra's own files.

    A refused run must leave nothing behind; Hydra creates the folder before the job starts.
    Empty folders Hydra made on the way are removed too, up to (not including) ``root``, and so
    is a sweep's folder that holds nothing but Hydra's ``multirun.yaml``.
    """
    try:
        out = Path(HydraConfig.get().runtime.output_dir).resolve()
    except ValueError:
        return
    if not out.is_dir() or not {p.name for p in out.iterdir()} <= HYDRA_BOOKKEEPING:
        return
    shutil.rmtree(out, ignore_errors=True)
    root = root.resolve()
    for parent in out.parents:
        if parent == root or root not in parent.parents:
            break
        if {p.name for p in parent.iterdir()} == {"multirun.yaml"}:  # a sweep with no job left
            (parent / "multirun.yaml").unlink()
        try:
            parent.rmdir()
        except OSError:
            break


@hydra.main(version_base="1.3", config_path=f"pkg://{CONFIG_MODULE}", config_name="config")
def main(cfg: DictConfig) -> float | None:
    from .runner import run

    try:
        row = run(cfg)
    except UserError as err:
        if _a_trial(cfg):  # a setting the trial drew that the run refuses (an MR that selects nothing)
            return _failed_trial(err)
        _discard_run_dir(Path(str(cfg.paths.root)))
        print(f"gif-bench: error: {err}", file=sys.stderr)
        sys.exit(2)
    except RunFailed as failure:
        if os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise failure.__cause__ from None
        print(f"gif-bench: run failed: {failure}", file=sys.stderr)
        hydra_cfg = HydraConfig.get()
        if _a_trial(cfg):  # its settings fail (an unlearner diverging at a high rate)
            return _failed_trial(failure)
        if hydra_cfg.mode != RunMode.MULTIRUN:
            sys.exit(1)
        # in a sweep the other jobs go on; callbacks.SweepChecks exits 1 at its end, naming this one
        (Path(hydra_cfg.runtime.output_dir) / FAILED).write_text(f"{failure}\n")
        return None
    if row.get("status") == "skipped":  # not a run (a pair of the solver study's sweep): leave no folder
        _discard_run_dir(Path(str(cfg.paths.root)))
    if cfg.tune:
        _write_trial({k: row.get(k) for k in TRIAL_KEYS})
        return row["objective"]
    return row.get("f1")


def _a_trial(cfg: DictConfig) -> bool:
    """Whether this job is a trial of a tuning study (``tune=<study>`` in a multirun)."""
    return bool(cfg.get("tune")) and HydraConfig.get().mode == RunMode.MULTIRUN


def _failed_trial(err: Exception) -> float:
    """A trial whose settings fail is a result of its study, scored below every other (Optuna's
    sweeper would stop at a trial without a value); ``gif_bench.tune`` stops when all fail."""
    _write_trial({"status": "failed", "objective": FAILED_OBJECTIVE, "error": f"{type(err).__name__}: {err}"})
    return FAILED_OBJECTIVE


def _write_trial(trial: dict) -> None:
    """The trial's summary in its Hydra folder, where ``gif_bench.tune`` reads its study's."""
    write_json(Path(HydraConfig.get().runtime.output_dir) / TRIAL_FILE, trial)


if __name__ == "__main__":
    main()
