"""Learning curve of a recipe: the model before the edit, trained for each epoch count.

Each point is its own run (the schedule spans the whole run), trained on the task's training
set, evaluated with the task's metrics. Used to size the CPU profile's recipes: the fewest
epochs whose validation accuracy is within noise of the longest run's.

    python scripts/learning_curve.py --epochs 10 20 30 60 -- experiment=table1 profile=cpu
"""

from __future__ import annotations

import argparse
import json
import time

from gif_bench import config, pipeline, quiet_torch_warnings, sweeps, train
from gif_bench.tasks import TASKS

quiet_torch_warnings()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, nargs="+", required=True)
    parser.add_argument("--scale-milestones", action="store_true", help="multistep: milestones scale with epochs")
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()
    run = config.run_settings(sweeps.compose(args.overrides))
    prepared = pipeline.prepare(run, "cpu")
    dataset, edit = prepared.dataset, prepared.edit
    base = run.train
    for epochs in args.epochs:
        recipe = base.but(epochs=epochs)
        if args.scale_milestones and base.milestones:
            recipe = recipe.but(milestones=tuple(round(m * epochs / base.epochs) for m in base.milestones))
        model = prepared.network()  # the seeded initialisation, with this many epochs' recipe
        start = time.perf_counter()
        train.fit(model, dataset, edit.train_set, recipe, run.seed, "cpu")
        seconds = time.perf_counter() - start
        metrics = TASKS[run.task.name].metrics(model, edit)
        shown = {
            k: round(v, 2) for k, v in metrics.items() if k in ("val_acc", "test_acc", "self_acc", "attack_success")
        }
        print(
            json.dumps(
                {
                    "epochs": epochs,
                    "milestones": list(recipe.milestones),
                    "seconds": round(seconds, 1),
                    **shown,
                }
            ),
            flush=True,
        )


if __name__ == "__main__":
    main()
