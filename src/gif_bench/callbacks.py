"""Hydra callbacks around a multirun: every job's config is checked before the first job runs,
and the sweep's exit status says whether any job failed.

Hydra's basic sweeper composes a sweep's jobs before launching them (so a misspelt group is
refused at once) but leaves the values to the job: without :meth:`SweepChecks.on_multirun_start`
``-m mr=0.05,1.5`` would train and edit job 0 before refusing job 1. A job that fails (a
diverging solver, a numerical error) writes its ``failed`` row and a ``FAILED`` file in its
Hydra folder and returns, so the other jobs go on; :meth:`SweepChecks.on_multirun_end` then
exits 1, naming them.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from .errors import UserError

FAILED = "FAILED"  # in a failed job's Hydra folder: its one-line error and its row's path


def _basic_sweeper(config: DictConfig) -> bool:
    """Whether the sweep's jobs are known in advance (Hydra's basic sweeper; Optuna's are not)."""
    return str(OmegaConf.select(config, "hydra.sweeper._target_", default="")).endswith(".BasicSweeper")


def one_line(err: Exception) -> str:
    """Hydra's composition error in one line: its first, and the options it lists."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    options = [line for line in lines[1:] if "=" not in line and ":" not in line and " " not in line]
    return lines[0] + (f"; one of {', '.join(options)}" if options else "")


class SweepChecks(Callback):
    """Validate every job of a basic sweep before any runs; exit 1 after a sweep with a failed job."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        if not _basic_sweeper(config):
            return  # Optuna's jobs exist only as it proposes them: each is checked when it starts
        from hydra.errors import HydraException

        from . import sweeps
        from .config import not_a_run, validate

        overrides = list(OmegaConf.to_container(config.hydra.overrides.task))
        jobs = sweeps.sweep_jobs(overrides)
        configs = sweeps.compose_each(jobs)
        for number, job in enumerate(jobs):
            swept = " ".join(o for o in job if o not in overrides) or "the command line"
            try:
                cfg = next(configs)
                if not_a_run(cfg) is None:
                    validate(cfg)
            except (UserError, HydraException) as err:
                why = str(err) if isinstance(err, UserError) else one_line(err)
                print(f"gif-bench: error: job {number} of {len(jobs)} ({swept}): {why}", file=sys.stderr)
                sys.exit(2)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(str(OmegaConf.select(config, "hydra.sweep.dir")))
        failed = sorted(sweep_dir.glob(f"*/{FAILED}"))
        if failed:
            lines = "; ".join(f"job {p.parent.name}: {p.read_text().strip()}" for p in failed)
            print(f"gif-bench: {len(failed)} job(s) of the sweep failed: {lines}", file=sys.stderr)
            sys.exit(1)
