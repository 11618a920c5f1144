"""Selective Synaptic Dampening (Foster, Schoepf & Brintrup, AAAI 2024): training-free. Each
parameter's importance to a set is the mean over batches of its squared gradient of the
batch's mean loss (a diagonal empirical Fisher), on U (``I_U``) and on the whole training set
(``I_D``); a parameter with ``I_U > α · I_D`` is dampened, ``θ ← θ · min(λ · I_D / I_U, 1)``.
The authors' ResNet-18 recipe: α = 10 (selection weighting), λ = 1 (dampening constant),
batches of 64, the model in eval mode. For a relabelling, U's importance is taken with the
learnt labels, the ones the edit removes."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..checks import Config, number
from ..data import Split, batches
from ..space import Interval
from ..unlearning import Plan
from .spec import MethodSpec


@dataclass(frozen=True)
class Options:
    """``conf/method/ssd.yaml``: the selection weighting α, the dampening constant λ and the
    batch size of the importances."""

    selection: float
    dampening: float
    importance_batch: int


def importance(model: nn.Module, split: Split, batch: int) -> dict[str, Tensor]:
    """``(1/B) Σ_b (∇_θ mean_{i∈b} ℓ(z_i))²`` over the ``B`` batches of ``split`` (in order),
    the model in eval mode."""
    params = dict(model.named_parameters())
    total = {k: torch.zeros_like(p) for k, p in params.items()}
    model.eval()
    chunks = batches(len(split), batch)
    for sl in chunks:
        loss = F.cross_entropy(model(split.x[sl]), split.y[sl])
        for k, g in zip(params, torch.autograd.grad(loss, list(params.values()))):
            total[k] += g.detach() ** 2
    return {k: v / len(chunks) for k, v in total.items()}


@torch.no_grad()
def dampen(
    model: nn.Module, forget: dict[str, Tensor], full: dict[str, Tensor], selection: float, dampening: float
) -> dict[str, Tensor]:
    """Scale each parameter with ``I_U > α · I_D`` by ``min(λ · I_D / I_U, 1)``, in place; the
    mask of the dampened parameters."""
    mask = {}
    for name, p in model.named_parameters():
        chosen = forget[name] > selection * full[name]
        factor = torch.where(chosen, (dampening * full[name] / forget[name]).clamp(max=1.0), torch.ones_like(p))
        p.mul_(factor)
        mask[name] = chosen.to(p.dtype)
    return mask


def plan(run, model, edit, data) -> Plan:
    """Dampen ``model`` in place; a plan with nothing left to train."""
    options: Options = run.method.options
    removed = edit.removed  # U with the labels the model learnt
    forget = importance(model, removed, options.importance_batch)
    full = importance(model, edit.train_set, options.importance_batch)
    mask = dampen(model, forget, full, options.selection, options.dampening)
    form = f"SSD: α {options.selection:g}, λ {options.dampening:g}"
    return Plan(None, F.cross_entropy, form, mask=mask, examples=len(removed) + len(edit.train_set))


def _validate(cfg: Config) -> None:
    number(cfg, "method.selection", 0.0, lo_open=True)
    number(cfg, "method.dampening", 0.0, lo_open=True)
    number(cfg, "method.importance_batch", 1, integer=True)


SPEC = MethodSpec(
    name="ssd",
    label="SSD",
    unlearn=plan,
    uses_mask=False,
    family="unlearning",
    keys=("selection", "dampening", "importance_batch"),
    validate=_validate,
    options=Options,
    # SSD trains nothing: its selection α and dampening λ (published 10 and 1) are all it tunes
    search={"method.selection": Interval(1.0, 100.0, log=True), "method.dampening": Interval(0.1, 10.0, log=True)},
)
