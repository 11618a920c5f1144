"""What an edit costs next to retraining: seconds, and example-gradient equivalents.

Seconds depend on the machine; example-gradient equivalents less so. One example-gradient is
one example through a forward and a backward pass of the model. Retraining costs
``epochs × |retained set|`` of them. An edit costs:

* an influence method: ``|U|`` for the right-hand side g, plus the solve, ``HVPs × n_H × ρ_hvp``
  (n_H the Hessian sample, ρ_hvp one Hessian-vector product's time over one gradient's on the
  same batch, trace included; a solve that spends no HVP, as K-FAC's, counts its seconds over
  one example-gradient's), plus the evaluation forwards of the line search × ρ_fwd;
* a fine-tuning unlearner: the examples it trains on (epochs × its training set), plus the
  evaluation forwards × ρ_fwd.

ρ_fwd (a forward over a forward and backward) and the gradient's time are measured in the run
itself (:func:`unit_costs`), on a batch of the Hessian sample's size.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .columns import Column

# The tables' cost columns: the unlearning literature's RTE as a speed-up (retraining's is 1 by
# definition), and the seconds of the tuning study that chose a tuned recipe (its trials' edits,
# gif_bench.tune; none for a published recipe), the price of the recipe beyond its one edit. Neither
# depends on which iterate is reported.
COLUMNS = (Column("speedup_vs_retrain", "max"), Column("tuning_seconds", None))
OF_THE_ORACLE = {"speedup_vs_retrain": 1.0}


@dataclass(frozen=True)
class UnitCosts:
    """Seconds of one example's gradient and of one example's forward (eval mode)."""

    gradient: float
    forward: float

    @property
    def forward_ratio(self) -> float:
        """ρ_fwd: a forward in example-gradients."""
        return self.forward / self.gradient


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def unit_costs(model: nn.Module, x: Tensor, y: Tensor, repeats: int = 3) -> UnitCosts:
    """Median seconds per example of a gradient and of a forward of ``model`` (eval mode) on the
    batch ``(x, y)``, after one untimed call of each. The parameters' ``.grad`` is left as found."""
    model.eval()
    params = [p for p in model.parameters() if p.requires_grad]

    def gradient() -> None:
        torch.autograd.grad(F.cross_entropy(model(x), y), params)

    def forward() -> None:
        with torch.no_grad():
            model(x)

    def seconds(fn: Callable[[], None]) -> float:
        fn()
        times = []
        for _ in range(repeats):
            _sync(x.device)
            start = time.perf_counter()
            fn()
            _sync(x.device)
            times.append(time.perf_counter() - start)
        return statistics.median(times) / len(x)

    return UnitCosts(gradient=seconds(gradient), forward=seconds(forward))


class ForwardCounter:
    """Examples through a module's forward while :meth:`counting` is active."""

    def __init__(self) -> None:
        self.examples = 0

    @contextmanager
    def counting(self, model: nn.Module) -> Iterator[None]:
        def hook(_module: nn.Module, inputs: tuple, _out: object) -> None:
            self.examples += int(inputs[0].shape[0])

        handle = model.register_forward_hook(hook)
        try:
            yield
        finally:
            handle.remove()

    def counted(self, metric_fn: Callable[[nn.Module, object], dict]) -> Callable[[nn.Module, object], dict]:
        """``metric_fn(model, edit)``, its model's forwards counted."""

        def wrapped(model: nn.Module, edit: object) -> dict:
            with self.counting(model):
                return metric_fn(model, edit)

        return wrapped


def influence_gradients(
    *, hvps: int, hessian_samples: int, solve_seconds: float, removed: int, forwards: int, unit: UnitCosts
) -> tuple[float, float]:
    """``(example-gradient equivalents of the edit, ρ_hvp)`` of an influence edit (module doc);
    ρ_hvp is NaN for a solve without HVPs."""
    if hvps > 0:
        rho_hvp = solve_seconds / hvps / (hessian_samples * unit.gradient)
        solve = hvps * hessian_samples * rho_hvp
    else:
        rho_hvp, solve = float("nan"), solve_seconds / unit.gradient
    return removed + solve + forwards * unit.forward_ratio, rho_hvp


def unlearning_gradients(*, examples: int, forwards: int, unit: UnitCosts) -> float:
    """Example-gradient equivalents of a fine-tuning unlearner (module doc)."""
    return examples + forwards * unit.forward_ratio


def retrain_gradients(epochs: int, retained: int) -> int:
    """Example-gradients of retraining: ``epochs × |retained set|``."""
    return epochs * retained


def speedup(retrain: float, edit: float) -> float:
    """``retrain / edit`` (NaN when the edit cost nothing measurable)."""
    return retrain / edit if edit > 0 else float("nan")
