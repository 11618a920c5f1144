"""Hydra callbacks around a multirun: every job's config is checked before the first job runs,
and the sweep's exit status says whether any job failed.

Hydra's basic sweeper composes a sweep's jobs before launching them (so a misspelt group is
refused at once) but leaves the values to the job: without :meth:`SweepChecks.on_multirun_start`
``-m mr=0.05,1.5`` would train and edit job 0 before refusing job 1. A job that fails (a
diverging solver, a numerical error) writes its ``failed`` row and a ``FAILED`` file in its
Hydra folder and returns, so the other jobs go on; :meth:`SweepChecks.on_multirun_end` then
exits 1, naming them.

A sweep whose launcher runs jobs in parallel (``launcher=joblib``) first trains every model and
oracle its jobs need, as many at a time as it runs jobs (:func:`train_first`): otherwise two
jobs of one seed would both train it, or one would wait on the other.
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
        runs = []
        for number, job in enumerate(jobs):
            swept = " ".join(o for o in job if o not in overrides) or "the command line"
            try:
                cfg = next(configs)
                if not_a_run(cfg) is None:
                    validate(cfg)
                    runs.append(cfg)
            except (UserError, HydraException) as err:
                why = str(err) if isinstance(err, UserError) else one_line(err)
                print(f"gif-bench: error: job {number} of {len(jobs)} ({swept}): {why}", file=sys.stderr)
                sys.exit(2)
        if (n_jobs := parallel_jobs(config)) > 1:
            train_first(runs, n_jobs)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(str(OmegaConf.select(config, "hydra.sweep.dir")))
        failed = sorted(sweep_dir.glob(f"*/{FAILED}"))
        if failed:
            lines = "; ".join(f"job {p.parent.name}: {p.read_text().strip()}" for p in failed)
            print(f"gif-bench: {len(failed)} job(s) of the sweep failed: {lines}", file=sys.stderr)
            sys.exit(1)


def parallel_jobs(config: DictConfig) -> int:
    """How many jobs the sweep's launcher runs at a time: ``hydra.launcher.n_jobs`` for Hydra's
    joblib launcher (joblib's reading of it: -1 is every core), 1 for any other."""
    if not str(OmegaConf.select(config, "hydra.launcher._target_", default="")).endswith(".JoblibLauncher"):
        return 1
    from joblib import effective_n_jobs

    return effective_n_jobs(int(OmegaConf.select(config, "hydra.launcher.n_jobs", default=1) or 1))


def train_first(configs: list[DictConfig], n_jobs: int) -> None:
    """Train every model and oracle the runs of ``configs`` need and the cache lacks,
    ``n_jobs`` at a time (joblib's process pool, which gives each worker its share of the
    cores), before the sweep's first job: every job then loads them. Each distinct training
    (:func:`gif_bench.pipeline.trainings`) is done once, as the first run needing it would."""
    from joblib import Parallel, delayed

    from . import pipeline, storage
    from .config import run_settings

    todo: dict[Path, tuple[Any, str]] = {}
    seen = set()
    for cfg in configs:
        run = run_settings(cfg)
        # what the trained weights depend on (train.cache_key), the training sets included: the
        # task and the dataset build them from the seed
        setting = storage.digest({key: run.fingerprint[key] for key in ("dataset", "model", "train", "task", "device")})
        if (setting, run.seed, bool(run.tune)) in seen:
            continue
        seen.add((setting, run.seed, bool(run.tune)))
        for which, path in pipeline.trainings(pipeline.prepare(run)).items():
            if not path.exists():
                todo.setdefault(path, (run, which))
    if not todo:
        return
    print(f"gif-bench: training {len(todo)} model(s) the sweep needs, {n_jobs} at a time", file=sys.stderr)
    done = Parallel(n_jobs=n_jobs)(delayed(_train)(run, which) for run, which in todo.values())
    for (path, (run, which)), (seconds, threads) in zip(todo.items(), done):
        print(f"gif-bench: seed {run.seed}'s {which}: {seconds:.0f} s, {threads} thread(s) -> {path}", file=sys.stderr)


def _train(run: Any, which: str) -> tuple[float, int]:
    """In a worker: one training of :func:`train_first`; its seconds and the worker's threads."""
    import torch

    from . import pipeline

    return pipeline.train_one(run, which).seconds, torch.get_num_threads()
