"""Oracle-relative metrics and membership inference on hand-made cases."""

import numpy as np
import pytest
import torch
from scipy.stats import entropy

from gif_bench import oracle


def test_kl_and_agreement_on_given_probability_tables():
    p_ref = torch.tensor([[0.7, 0.2, 0.1], [0.1, 0.1, 0.8], [0.5, 0.5, 0.0]])
    p = torch.tensor([[0.6, 0.3, 0.1], [0.3, 0.4, 0.3], [0.2, 0.7, 0.1]])
    expect = np.mean([entropy(a, b) for a, b in zip(p_ref.numpy(), p.numpy())])  # scipy: KL(a ‖ b), nats
    assert oracle.kl_divergence(p_ref, p) == pytest.approx(expect, rel=1e-6)
    assert oracle.kl_divergence(p, p) == 0.0
    assert oracle.agreement(p_ref, p) == pytest.approx(100 / 3)  # row 0 agrees; row 1: 2 vs 1, row 2: 0 vs 1
    assert oracle.agreement(p, p) == 100.0


def _logits(n: int, margin: float, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Ten-class logits whose true class leads the others by about ``margin``."""
    y = torch.randint(0, 10, (n,), generator=gen)
    z = torch.randn(n, 10, generator=gen)
    z[torch.arange(n), y] += margin + 0.5 * torch.randn(n, generator=gen)
    return z, y


def test_mia_efficacy_of_a_memorised_and_of_an_unseen_removal_set():
    gen = torch.Generator().manual_seed(0)
    members = oracle.mia_features(*_logits(1500, 7.0, gen))  # fitted training data: confident
    test = oracle.mia_features(*_logits(1500, 1.5, gen))  # unseen data: much less so
    memorised = oracle.mia_features(*_logits(300, 7.0, gen))  # U as the trained model sees it
    unseen = oracle.mia_features(*_logits(300, 1.5, gen))  # U as a model that never saw it does
    fresh_test = oracle.mia_features(*_logits(300, 1.5, gen))
    assert oracle.mia_efficacy(members, test, memorised) < 5.0
    on_test = oracle.mia_efficacy(members, test, fresh_test)
    assert on_test > 80.0 and abs(oracle.mia_efficacy(members, test, unseen) - on_test) < 6.0
    # balanced: 10× more members than non-members does not tilt the attack towards "member"
    assert abs(oracle.mia_efficacy(np.concatenate([members] * 10), test, unseen) - on_test) < 6.0
