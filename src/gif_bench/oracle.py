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

KEYS = ("kl_retrain_test", "kl_retrain_self", "agree_retrain_test", "mia_efficacy")
# Every task's tables show them after the task's own columns; MIA efficacy has no direction
# (the retrained model's value is the target).
COLUMNS = (
    Column("kl_retrain_test", "min"),
    Column("kl_retrain_self", "min"),
    Column("agree_retrain_test", "max"),
    Column("mia_efficacy", None),
)
OF_THE_ORACLE = {"kl_retrain_test": 0.0, "kl_retrain_self": 0.0, "agree_retrain_test": 100.0}  # by definition
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


@dataclass
class Reference:
    """The oracle's predictive distributions on the test split and on U."""

    test: Tensor
    self: Tensor

    @classmethod
    def of(cls, oracle: nn.Module, edit: Edit) -> Reference:
        return cls(logits(oracle, edit.eval_sets["test"]).softmax(1), logits(oracle, edit.eval_sets["self"]).softmax(1))


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
    out = {
        "mia_efficacy": mia_efficacy(
            mia_features(logits(model, members), members.y),
            mia_features(test_logits, test.y),
            mia_features(self_logits, own.y),
            seed,
        )
    }
    if reference is not None:
        p_test, p_self = test_logits.softmax(1), self_logits.softmax(1)
        out["kl_retrain_test"] = kl_divergence(reference.test, p_test)
        out["kl_retrain_self"] = kl_divergence(reference.self, p_self)
        out["agree_retrain_test"] = agreement(reference.test, p_test)
    return {k: out[k] for k in KEYS if k in out}
