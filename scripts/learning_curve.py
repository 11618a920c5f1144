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

import torch

from gif_bench import data as datasets
from gif_bench import models, quiet_torch_warnings, sweeps, tasks, train
from gif_bench.tasks import TASKS

quiet_torch_warnings()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, nargs="+", required=True)
    parser.add_argument("--scale-milestones", action="store_true", help="multistep: milestones scale with epochs")
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()
    cfg = sweeps.compose(args.overrides)
    dataset = datasets.load(cfg.dataset, cfg.paths.data, "cpu")
    edit = tasks.build(cfg.task, dataset)
    base_epochs, base_milestones = int(cfg.train.epochs), list(cfg.train.get("milestones") or [])
    for epochs in args.epochs:
        cfg.train.epochs = epochs
        if args.scale_milestones and base_milestones:
            cfg.train.milestones = [round(m * epochs / base_epochs) for m in base_milestones]
        torch.manual_seed(int(cfg.seed))
        model = models.build(cfg.model, dataset.in_channels, dataset.num_classes, cfg.dataset.image_size)
        start = time.perf_counter()
        train.fit(model, dataset, edit.train_set, cfg.train, int(cfg.seed), "cpu")
        seconds = time.perf_counter() - start
        metrics = TASKS[cfg.task.name].metrics(model, edit)
        shown = {
            k: round(v, 2) for k, v in metrics.items() if k in ("val_acc", "test_acc", "self_acc", "attack_success")
        }
        print(
            json.dumps(
                {
                    "epochs": epochs,
                    "milestones": list(cfg.train.get("milestones") or []),
                    "seconds": round(seconds, 1),
                    **shown,
                }
            ),
            flush=True,
        )


if __name__ == "__main__":
    main()
