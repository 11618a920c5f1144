"""Training recipes and the trained-model cache.

A trained model is cached under ``<paths.cache>/models/<key>.pt`` (``paths.cache`` defaults to
``<paths.root>/cache``) where the key hashes
everything that determines the weights: dataset and split, model, recipe, seed and the exact
contents of the training set (so any change to it — removed or relabelled examples — gets its
own entry).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm.auto import tqdm

from . import storage
from .data import Data, Split, augment, batches
from .errors import TrainingDiverged
from .settings import Recipe, Run

log = logging.getLogger(__name__)


@dataclass
class Trained:
    model: nn.Module
    seconds: float
    cached: bool


def cache_key(run: Run, train_set: Split) -> str:
    """Hash of everything that determines trained weights (the device type too: CPU and CUDA
    draw different random streams, and bf16 autocast only runs on CUDA): the dataset's, the
    model's and the recipe's config nodes as given (``run.fingerprint``), the seed and the
    training set's contents."""
    device = train_set.y.device.type
    spec = {
        "device": device,
        "amp": run.train.amp and device == "cuda",
        "dataset": run.fingerprint["dataset"],
        "model": run.fingerprint["model"],
        "train": run.fingerprint["train"],
        "seed": run.seed,
        "train_set": storage.tensor_digest(train_set.x, train_set.y),
    }
    return storage.digest(spec)


def optimizer(model: nn.Module, recipe: Recipe) -> torch.optim.Optimizer:
    """The recipe's optimizer (SGD with its momentum, weight decay and Nesterov flag) over ``model``."""
    if recipe.optimizer != "sgd":  # config.validate refuses it first; a Recipe built by hand may not
        raise ValueError(f"train.optimizer={recipe.optimizer}: must be sgd, the one optimizer there is")
    return torch.optim.SGD(
        model.parameters(),
        lr=recipe.lr,
        momentum=recipe.momentum,
        weight_decay=recipe.weight_decay,
        nesterov=recipe.nesterov,
    )


def _schedule(opt: torch.optim.Optimizer, recipe: Recipe, steps_per_epoch: int):
    total = max(1, recipe.epochs * steps_per_epoch)
    if recipe.schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=total)
    if recipe.schedule == "multistep":
        milestones = [m * steps_per_epoch for m in recipe.milestones]
        return torch.optim.lr_scheduler.MultiStepLR(opt, milestones=milestones, gamma=recipe.gamma)
    return torch.optim.lr_scheduler.LambdaLR(opt, lambda _: 1.0)


def fit(
    model: nn.Module,
    data: Data,
    train_set: Split,
    recipe: Recipe,
    seed: int,
    device,
    *,
    loss_fn: Callable[[Tensor, Tensor], Tensor] = F.cross_entropy,
    penalty: Callable[[nn.Module, float], Tensor] | None = None,
    grad_mask: dict[str, Tensor] | None = None,
    on_epoch: Callable[[int], object] | None = None,
    desc: str = "train",
    teacher: nn.Module | None = None,
    reuse: torch.optim.Optimizer | None = None,
) -> nn.Module:
    """Train ``model`` on ``train_set`` with ``recipe`` (SGD, per-step LR schedule).

    The objective of a batch is ``loss_fn(logits, y)`` (``loss_fn(logits, y, teacher_logits)``
    with a ``teacher``, whose logits on the same batch are taken without gradients) plus
    ``penalty(model, t)`` (``t`` the fraction of the steps done); ``grad_mask`` zeroes the
    gradients outside it before each step; ``on_epoch(epoch)`` (1-based) is called after each
    epoch, the model in eval mode. ``reuse``: an optimizer to go on with (its momentum kept
    across calls, as an unlearner alternating two objectives needs) instead of a new one.
    """
    gen = torch.Generator(device=device).manual_seed(seed)
    n = len(train_set)
    bs = min(int(recipe.batch_size), n)
    steps = len(batches(n, bs)) if not recipe.drop_last else max(1, n // bs)
    opt = optimizer(model, recipe) if reuse is None else reuse
    sched = _schedule(opt, recipe, steps)
    use_amp = bool(recipe.amp) and torch.device(device).type == "cuda"
    model.train()
    params = dict(model.named_parameters())
    total_steps, done = max(1, recipe.epochs * steps), 0
    bar = tqdm(range(recipe.epochs), desc=desc, unit="epoch", leave=False, dynamic_ncols=True)
    for epoch in bar:
        order = torch.randperm(n, device=device, generator=gen)
        correct, seen, total_loss = 0, 0, 0.0
        for sl in batches(n, bs)[:steps]:
            idx = order[sl]
            x, y = train_set.x[idx], train_set.y[idx]
            if recipe.augment:
                x = augment(x, crop_padding=data.crop_padding, hflip=data.hflip, generator=gen)
            with torch.autocast(device_type="cuda", dtype=torch.bfloat16, enabled=use_amp):
                logits = model(x)
                if teacher is None:
                    loss = loss_fn(logits, y)
                else:
                    with torch.no_grad():
                        taught = teacher(x)
                    loss = loss_fn(logits, y, taught)
            if penalty is not None:
                loss = loss + penalty(model, done / total_steps)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if grad_mask is not None:
                for name, keep in grad_mask.items():
                    if params[name].grad is not None:
                        params[name].grad.mul_(keep)
            opt.step()
            sched.step()
            done += 1
            value = float(loss.detach())
            if not math.isfinite(value):  # a NaN model trained on is a wrong answer: stop, cache nothing
                raise TrainingDiverged(
                    f"{desc}: the loss became {value} at epoch {epoch + 1} of {recipe.epochs}, step {done} "
                    f"(train={recipe.name}, lr {recipe.lr:g}); the recipe is unstable on this data: lower train.lr"
                )
            total_loss += value * len(y)
            if y.dim() == 1:
                correct += int((logits.argmax(1) == y).sum())
            seen += len(y)
        bar.set_postfix(loss=f"{total_loss / seen:.3f}", acc=f"{100 * correct / seen:.1f}%")
        if on_epoch is not None:
            model.eval()
            on_epoch(epoch + 1)
            model.train()
    model.eval()
    return model


def cache_path(run: Run, train_set: Split, cache_dir: str | Path) -> Path:
    """Where the weights :func:`train_or_load` trains for ``run`` on ``train_set`` are cached."""
    return Path(cache_dir) / "models" / f"{cache_key(run, train_set)}.pt"


def train_or_load(run: Run, model: nn.Module, data: Data, train_set: Split, device, cache_dir: str | Path) -> Trained:
    """Load cached weights for this exact setting, or train them and cache them atomically."""
    path = cache_path(run, train_set, cache_dir)
    if path.exists():
        initial = {k: v.clone() for k, v in model.state_dict().items()}
        try:
            state = torch.load(path, map_location=device, weights_only=True)
            model.load_state_dict(state["model"])
            seconds = float(state["seconds"])
            if not all(bool(torch.isfinite(v).all()) for v in state["model"].values() if v.is_floating_point()):
                raise ValueError("its weights are not finite (a diverged training)")
        except Exception as err:  # a truncated or foreign file: whatever torch.load raises
            model.load_state_dict(initial)  # a failed load may have copied some tensors
            aside = storage.move_aside(path)
            reason = str(err).splitlines()[0] if str(err) else type(err).__name__
            log.warning("cached model %s cannot be read (%s); moved to %s, training anew", path, reason, aside.name)
        else:
            model.eval()
            log.info("loaded cached model %s", path)
            return Trained(model, seconds, True)
    torch.manual_seed(run.seed)
    start = time.perf_counter()
    fit(model, data, train_set, run.train, run.seed, device)
    seconds = time.perf_counter() - start
    storage.save_torch(path, {"model": model.state_dict(), "seconds": seconds})
    log.info("trained in %.1fs, cached at %s", seconds, path)
    return Trained(model, seconds, False)
