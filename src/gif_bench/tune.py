"""Equal-budget tuning on validation: ``python -m gif_bench.tune --profile cpu [experiments]``
(``make tune PROFILE=cpu``).

For each task of the experiments (the first experiment of each task sets its settings) and each
method of that experiment's sweep, one study of Hydra's Optuna sweeper searches the method's
space (``MethodSpec.space``) with the same number of trials (``--trials``) and the same sampler
(TPE, ``--sampler-seed``; half the budget drawn at random before it models the rest). Every
trial is a run with ``tune=<profile>/<task>/<method>`` on the tuning seed (``--seed``,
:data:`gif_bench.tuning.FIRST_SEED` or more) from the published recipe, judged on validation
alone (:mod:`gif_bench.tuning`: the test splits and the oracle are withheld). A key the
experiment's sweep sets (table 1's MR) is held at the config's value, not searched: at
evaluation the sweep's value would replace the tuned one. The best trial's settings are written
to ``conf/recipes/tuned/<profile>/<task>/<method>.yaml`` with what the study cost, where
``recipe=tuned`` (the method tables' default) reads them.
"""

from __future__ import annotations

import argparse
import importlib.resources
import json
import os
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path

from omegaconf import OmegaConf

from . import CONFIG_MODULE, space, storage, sweeps, tuning
from .callbacks import one_line
from .methods import METHODS
from .tasks import TASKS


@dataclass(frozen=True)
class Study:
    """One method's study on one task: its experiment, the keys it searches and holds."""

    profile: str
    experiment: str
    task: str
    method: str
    searched: dict[str, object]
    fixed: dict[str, object]
    held: tuple[str, ...]

    @property
    def name(self) -> str:
        return f"{self.profile}/{self.task}/{self.method}"


def _grid(experiment: str, profile: str) -> dict[str, list[str]]:
    """The experiment's sweep in this profile: each swept key's values."""
    params = sweeps.compose([f"experiment={experiment}", f"profile={profile}"], hydra=True).hydra.sweeper.params
    return {str(k): str(v).split(",") for k, v in (params or {}).items()}


def studies(
    profile: str, experiments: list[str], methods: list[str] | None = None, extra: list[str] = ()
) -> list[Study]:
    """The studies of ``experiments`` in ``profile``: one per task (its first experiment) and
    method of that experiment's sweep that has something to tune."""
    out: list[Study] = []
    seen: set[str] = set()
    for experiment in experiments:
        cfg = sweeps.compose([f"experiment={experiment}", f"profile={profile}", *extra])
        task = str(cfg.task.name)
        if task in seen:
            continue
        seen.add(task)
        grid = _grid(experiment, profile)
        held = tuple(k for k in grid if k not in ("method", "seed"))  # the sweep's value would replace the tuned one
        # the experiment's methods; for one that sweeps none (the quickstart), those asked for
        for method in grid.get("method", methods or [str(cfg.method.name)]):
            entry = METHODS[method]
            if not entry.space() or (methods and method not in methods):
                continue
            out.append(
                Study(
                    profile,
                    experiment,
                    task,
                    method,
                    space.searched(entry.space(), set(held)),
                    space.fixed(entry.space()),
                    held,
                )
            )
    return out


def command(
    study: Study, trials: int, seed: int, sampler_seed: int, root: Path, folder: Path, extra: list[str] = ()
) -> list[str]:
    """The ``python -m gif_bench --multirun`` command line of ``study`` (``extra``: overrides
    every trial takes, after the experiment's)."""
    return [
        sys.executable,
        "-m",
        "gif_bench",
        "--multirun",
        f"experiment={study.experiment}",
        f"profile={study.profile}",
        f"method={study.method}",
        "recipe=published",
        f"tune={study.name}",
        f"seed={seed}",
        "logger=none",
        f"paths.root={root}",
        "hydra/sweeper=optuna",
        "hydra.sweeper.params=null",  # the experiment's grid: the trials search the space instead
        "hydra.sweeper.direction=maximize",
        f"hydra.sweeper.n_trials={trials}",
        "hydra.sweeper.n_jobs=1",  # one trial at a time: each is proposed knowing every earlier one
        f"hydra.sweeper.sampler.seed={sampler_seed}",
        # TPE models the trials so far once half the budget has been drawn at random (Optuna's
        # default waits for 10, which would leave a budget of 8 a random search)
        f"hydra.sweeper.sampler.n_startup_trials={max(1, trials // 2)}",
        f"hydra.sweeper.study_name={study.name.replace('/', '-')}",
        f"hydra.sweep.dir={folder}",
        *extra,
        *(space.override(k, v) for k, v in study.searched.items()),
        *(space.override(k, v) for k, v in study.fixed.items()),
    ]


def _trials(folder: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(folder.glob(f"*/{tuning.TRIAL_FILE}"))]


def recipe(study: Study, folder: Path, trials: int, seed: int, sampler_seed: int) -> tuple[str, dict]:
    """The tuned recipe of a finished study, as the YAML file ``recipe=tuned`` reads, and its
    ``tuning`` record (trials, seconds: the trials' edit seconds, best objective)."""
    best = OmegaConf.load(folder / "optimization_results.yaml")
    done = _trials(folder)
    record = {
        "study": study.name,
        "trials": len(done),
        "seconds": round(sum(t.get("edit_seconds") or 0.0 for t in done), 3),
        "objective": float(best.best_value),
        "seed": seed,
    }
    values = {**{k: best.best_params[k] for k in study.searched}, **study.fixed}
    node = OmegaConf.from_dotlist([space.override(k, v) for k, v in values.items()])
    node.tuning = record
    held = f"; held by the experiment's grid: {', '.join(study.held)}" if study.held else ""
    header = (
        "# @package _global_\n"
        f"# Tuned by python -m gif_bench.tune --profile {study.profile} (experiment {study.experiment}): "
        f"{trials} trials of\n# Optuna's TPE sampler (seed {sampler_seed}) on tuning seed {seed}, "
        f"objective {_objective_name(study.task)} at the final iterate{held}.\n"
    )
    return header + OmegaConf.to_yaml(node), record


def _objective_name(task: str) -> str:
    return TASKS[task].score.__name__


def _study(study: Study, args: argparse.Namespace, root: Path, out: Path) -> dict:
    """Run one study in its own process; write its tuned recipe; its record."""
    folder = root / "tuning" / "studies" / study.name
    shutil.rmtree(folder, ignore_errors=True)  # this study's trials only (finished ones resume from their rows)
    started = time.perf_counter()
    env = {**os.environ, "TQDM_DISABLE": "1", **({"OMP_NUM_THREADS": "1"} if args.jobs > 1 else {})}
    done = subprocess.run(
        command(study, args.trials, args.seed, args.sampler_seed, root, folder, args.set),
        capture_output=not args.verbose,
        env=env,
    )
    if done.returncode != 0:
        tail = (done.stderr or b"").decode(errors="replace").strip().splitlines()[-3:]
        raise RuntimeError(f"study {study.name} failed: {' | '.join(tail)}")
    failed = [t for t in _trials(folder) if t.get("status") != "ok"]
    if len(failed) == args.trials:  # nothing to choose from: the settings, or the data, are wrong
        raise RuntimeError(f"study {study.name}: every trial failed; the first: {failed[0].get('error')}")
    text, record = recipe(study, folder, args.trials, args.seed, args.sampler_seed)
    target = storage.write_text(out / "recipes" / "tuned" / f"{study.name}.yaml", text)
    return {**record, "wall_seconds": round(time.perf_counter() - started, 1), "recipe": str(target)}


def run(args: argparse.Namespace) -> list[dict]:
    """Every study, ``args.jobs`` at a time (each trial on one thread when more than one);
    the records, also written to ``<root>/tuning/studies/<profile>/summary.json``."""
    out = Path(args.out) if args.out else Path(str(importlib.resources.files(CONFIG_MODULE)))
    root = Path(args.root)
    todo = studies(args.profile, args.experiments, args.methods.split(",") if args.methods else None, args.set)
    if not todo:
        raise RuntimeError(f"no method of {', '.join(args.experiments)} to tune (--methods={args.methods})")
    print(f"gif-bench tune: {len(todo)} studies of {args.trials} trials each, {args.jobs} at a time", flush=True)
    started = time.perf_counter()
    records = []
    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        futures = [pool.submit(_study, study, args, root, out) for study in todo]
        for i, future in enumerate(as_completed(futures), 1):
            try:
                record = future.result()
            except RuntimeError:
                for f in futures:
                    f.cancel()
                raise
            records.append(record)
            print(
                f"[{i}/{len(todo)}] {record['study']}: objective {record['objective']:.4f} "
                f"({record['trials']} trials, {record['wall_seconds']:.0f} s) -> {record['recipe']}",
                flush=True,
            )
    wall = time.perf_counter() - started
    summary = {"profile": args.profile, "trials": args.trials, "jobs": args.jobs, "wall_seconds": round(wall, 1)}
    storage.write_json(root / "tuning" / "studies" / args.profile / "summary.json", {**summary, "studies": records})
    print(f"gif-bench tune: {len(records)} studies in {wall / 60:.1f} min", flush=True)
    return records


def summary(profile: str, out: Path) -> str:
    """The tuned recipes of ``profile`` under ``out`` as a Markdown table: per task and method
    (in registry order), the chosen settings, the best objective, the trials and their seconds."""
    lines = []
    for task in TASKS:
        for method in METHODS:
            path = out / "recipes" / "tuned" / profile / task / f"{method}.yaml"
            if not path.is_file():
                continue
            node = OmegaConf.to_container(OmegaConf.load(path))
            record = node.pop("tuning", {})
            settings = ", ".join(f"{k}={_short(v)}" for k, v in _flat(node).items())
            objective, seconds = record.get("objective"), record.get("seconds")
            lines.append(
                f"| {task} | {METHODS[method].label} | {settings} | {objective:.4f} | "
                f"{record.get('trials')} | {seconds:.1f} |"
            )
    head = "| task | method | tuned settings | objective (validation) | trials | seconds |\n|---|---|---|---|---|---|"
    return "\n".join([head, *lines]) + "\n"


def _flat(node: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in node.items():
        out.update(_flat(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v})
    return out


def _short(value: object) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m gif_bench.tune", description=__doc__.split("\n\n")[0])
    parser.add_argument("experiments", nargs="*", help="experiments whose tasks and methods to tune")
    parser.add_argument("--summary", action="store_true", help="print the profile's tuned recipes as a table")
    parser.add_argument("--profile", default="cpu")
    parser.add_argument("--trials", type=int, default=8, help="trials per method, the same for every method")
    parser.add_argument("--seed", type=int, default=tuning.FIRST_SEED, help="the tuning seed")
    parser.add_argument("--sampler-seed", type=int, default=0)
    parser.add_argument("--methods", default=None, help="comma-separated: only these methods")
    parser.add_argument("--root", default="outputs", help="paths.root of the trials")
    parser.add_argument("--out", default=None, help="where conf/recipes/tuned/ goes (default: the config module)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="an override every trial takes")
    parser.add_argument("--jobs", type=int, default=1, help="studies at a time (each trial on one thread if > 1)")
    parser.add_argument("--verbose", action="store_true", help="show the trials' output")
    args = parser.parse_args(argv)
    out = Path(args.out) if args.out else Path(str(importlib.resources.files(CONFIG_MODULE)))
    if args.summary:
        print(summary(args.profile, out), end="")
        return
    if not args.experiments:
        parser.error("give the experiments to tune (e.g. table1 table2), or --summary")
    if args.trials < 1:
        parser.error("--trials: must be at least 1")
    if args.jobs < 1:
        parser.error("--jobs: must be at least 1")
    if args.seed < tuning.FIRST_SEED:
        parser.error(f"--seed: a tuning seed is {tuning.FIRST_SEED} or more (the evaluation seeds are below)")
    unknown = [m for m in (args.methods or "").split(",") if m and m not in METHODS]
    if unknown:
        parser.error(f"--methods: {', '.join(unknown)} is not one of {', '.join(METHODS)}")
    from hydra.errors import HydraException

    try:
        run(args)
    except HydraException as err:  # a misspelt profile or experiment, before any trial
        print(f"gif-bench tune: error: {one_line(err)}", file=sys.stderr)
        sys.exit(2)
    except RuntimeError as err:  # nothing to tune, or a study that failed
        print(f"gif-bench tune: {err}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
