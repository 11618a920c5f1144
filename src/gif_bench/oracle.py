"""Metrics measured against the retrained model's function, and membership inference.

For a model ``f`` and the oracle ``r`` (retrained from scratch without U), on every task:

* ``kl_retrain_test``: mean over the test split of KL(p_r(·|x) ‖ p_f(·|x)), in nats;
* ``kl_retrain_self``: the same over U;
* ``agree_retrain_test``: % of test examples on which f and r predict the same class;
* ``mia_efficacy``: % of U that a membership-inference attack on ``f`` calls a non-member
  (Jia et al. 2023, "Model sparsity can simplify machine unlearning", the measure SalUn
  reports). The attack is a logistic regression (scikit-learn, standardised features) on three
  per-example features of f's output — the top-class confidence, the loss at the label and the
  entropy of the prediction — fitted to tell retained training examples (members) from test
  examples (non-members), with equally many of each. The retrained model's value
  (``retrain_mia_efficacy``) is the target: U is unseen data to it.
* ``retain_acc``: accuracy (%) on the retained training examples the attack fits on (up to
  :data:`MIA_MEMBERS` of R, seeded: the same sample for every model of a run);
* ``tow``: the tug-of-war score of RUM (Zhao et al. 2024), ``(1 − |ΔFA|)(1 − |ΔRA|)(1 − |ΔTA|)``
  with ΔFA, ΔRA and ΔTA the differences to the retrained model's accuracy on U (``self_acc``),
  on the retained sample (``retain_acc``) and on the task's test split (``test_acc``: for a
  class removal, without the removed class), as fractions:
  1 for a model that matches the retrained one on all three, 0 at the worst.

They are reported beside the task's accuracies, not averaged into ``gap_to_retrain``: a KL in
nats and a percentage of U do not share a scale with accuracy points.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from . import metrics
from .columns import Column
from .data import Split

if TYPE_CHECKING:
    from .edit import Edit

KEYS = ("kl_retrain_test", "kl_retrain_self", "agree_retrain_test", "mia_efficacy", "retain_acc", "tow")
# Every task's tables show them after the task's own columns; MIA efficacy and the retained
# accuracy have no direction (the retrained model's value is the target).
COLUMNS = (
    Column("tow", "max"),
    Column("kl_retrain_test", "min"),
    Column("kl_retrain_self", "min"),
    Column("agree_retrain_test", "max"),
    Column("mia_efficacy", None),
    Column("retain_acc", None),
)
# the oracle's own values, by definition
OF_THE_ORACLE = {"kl_retrain_test": 0.0, "kl_retrain_self": 0.0, "agree_retrain_test": 100.0, "tow": 1.0}
MIA_MEMBERS = 2000  # retained training examples (and as many test examples) fitted, at most


def logits(model: nn.Module, split: Split) -> Tensor:
    """``model``'s logits on ``split`` in eval mode, as float32 on the CPU (shared with the
    task's metrics inside :func:`gif_bench.metrics.shared_logits`)."""
    return metrics.logits(model, split).cpu()


def kl_divergence(p_ref: Tensor, p: Tensor) -> float:
    """Mean over rows of KL(p_ref ‖ p) = Σ_k p_ref,k (log p_ref,k − log p_k), in nats (0·log 0 = 0)."""
    p_ref, p = p_ref.double(), p.double()
    log_ratio = torch.log(p_ref.clamp_min(1e-300)) - torch.log(p.clamp_min(1e-300))
    return float(torch.where(p_ref > 0, p_ref * log_ratio, torch.zeros_like(p_ref)).sum(1).mean())


def agreement(p_ref: Tensor, p: Tensor) -> float:
    """% of rows whose most probable class is the same under both."""
    return 100.0 * float((p_ref.argmax(1) == p.argmax(1)).double().mean())


def mia_features(logit: Tensor, y: Tensor) -> np.ndarray:
    """Per example: [top-class confidence, cross-entropy at label y, entropy of the prediction]."""
    log_p = F.log_softmax(logit.double(), dim=1)
    p = log_p.exp()
    loss = -log_p.gather(1, y.cpu().long().unsqueeze(1)).squeeze(1)
    entropy = -(p * log_p).sum(1)
    return torch.stack([p.max(1).values, loss, entropy], dim=1).numpy()


def mia_efficacy(members: np.ndarray, non_members: np.ndarray, probe: np.ndarray, seed: int = 0) -> float:
    """% of ``probe`` rows an attack calls non-members: logistic regression on standardised
    features, fitted on equally many ``members`` and ``non_members`` (label 1 = member)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    rng = np.random.default_rng(seed)
    n = min(len(members), len(non_members), MIA_MEMBERS)
    x = np.concatenate([members[rng.permutation(len(members))[:n]], non_members[rng.permutation(len(non_members))[:n]]])
    y = np.concatenate([np.ones(n), np.zeros(n)])
    attack = make_pipeline(StandardScaler(), LogisticRegression()).fit(x, y)
    return 100.0 * float((attack.predict(probe) == 0).mean())


def tow(accuracies: dict[str, float], reference: dict[str, float]) -> float:
    """RUM's tug-of-war: ``Π (1 − |a_k − r_k| / 100)`` over U's, the retained and the test
    accuracy (``self_acc``, ``retain_acc``, ``test_acc``, in %) of a model (``accuracies``)
    and of the retrained one (``reference``)."""
    score = 1.0
    for key in ("self_acc", "retain_acc", "test_acc"):
        score *= 1.0 - abs(accuracies[key] - reference[key]) / 100.0
    return score


def _accuracy(logit: Tensor, y: Tensor) -> float:
    return 100.0 * float((logit.argmax(1) == y.cpu()).double().mean()) if len(y) else float("nan")


@dataclass
class Reference:
    """The oracle's predictive distributions on the test split and on U, and its accuracies
    on U, on the retained sample and on the test split (for :func:`tow`)."""

    test: Tensor
    self: Tensor
    accuracies: dict[str, float]

    @classmethod
    def of(cls, oracle: nn.Module, edit: Edit, seed: int = 0) -> Reference:
        test, own, members = edit.eval_sets["test"], edit.eval_sets["self"], _retained(edit, seed)
        z_test, z_self = logits(oracle, test), logits(oracle, own)
        accuracies = {
            "self_acc": _accuracy(z_self, own.y),
            "retain_acc": _accuracy(logits(oracle, members), members.y),
            "test_acc": _accuracy(z_test, test.y),
        }
        return cls(z_test.softmax(1), z_self.softmax(1), accuracies)


def _retained(edit: Edit, seed: int) -> Split:
    """Up to MIA_MEMBERS retained training examples (members), seeded."""
    index = edit.retained_index
    pick = torch.randperm(len(index), generator=torch.Generator().manual_seed(seed))[:MIA_MEMBERS]
    return edit.train_set.subset(index[pick.to(index.device)])


def against_oracle(model: nn.Module, edit: Edit, reference: Reference | None, seed: int = 0) -> dict[str, float]:
    """Every key of :data:`KEYS` for ``model`` (only ``mia_efficacy`` without a reference)."""
    test, own = edit.eval_sets["test"], edit.eval_sets["self"]
    test_logits, self_logits = logits(model, test), logits(model, own)
    members = _retained(edit, seed)
    member_logits = logits(model, members)
    out = {
        "mia_efficacy": mia_efficacy(
            mia_features(member_logits, members.y),
            mia_features(test_logits, test.y),
            mia_features(self_logits, own.y),
            seed,
        ),
        "retain_acc": _accuracy(member_logits, members.y),
    }
    if reference is not None:
        p_test, p_self = test_logits.softmax(1), self_logits.softmax(1)
        out["kl_retrain_test"] = kl_divergence(reference.test, p_test)
        out["kl_retrain_self"] = kl_divergence(reference.self, p_self)
        out["agree_retrain_test"] = agreement(reference.test, p_test)
        accuracies = {"self_acc": _accuracy(self_logits, own.y), "test_acc": _accuracy(test_logits, test.y)}
        out["tow"] = tow({**accuracies, "retain_acc": out["retain_acc"]}, reference.accuracies)
    return {k: out[k] for k in KEYS if k in out}
