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


def test_tow_is_the_product_of_the_three_accuracy_gaps_as_fractions():
    """RUM's tug-of-war on accuracies chosen by hand: (1 − 0.10)(1 − 0.02)(1 − 0.005)."""
    retrained = {"self_acc": 0.0, "retain_acc": 99.0, "test_acc": 95.0}
    edited = {"self_acc": 10.0, "retain_acc": 97.0, "test_acc": 95.5}
    assert oracle.tow(edited, retrained) == pytest.approx(0.9 * 0.98 * 0.995)
    assert oracle.tow(retrained, retrained) == 1.0
    assert oracle.tow({"self_acc": 100.0, "retain_acc": 99.0, "test_acc": 95.0}, retrained) == 0.0


def test_against_oracle_reports_retained_accuracy_and_tow_from_the_models_predictions():
    """A linear model and a copy with one class's logit lowered (it never predicts that class):
    the accuracies on U, the retained sample and the test split, counted here by hand, give
    the reported ToW; the oracle against itself scores 1."""
    from torch import nn

    from gif_bench.data import Split
    from gif_bench.edit import Edit

    gen = torch.Generator().manual_seed(0)
    x = torch.randn(300, 1, 1, 4, generator=gen)
    retrained = nn.Sequential(nn.Flatten(), nn.Linear(4, 3))
    y = retrained(x).argmax(1).detach()  # the retrained model is right everywhere
    y[:30] = (y[:30] + 1) % 3  # except on 30 examples
    edited = nn.Sequential(nn.Flatten(), nn.Linear(4, 3))
    edited.load_state_dict(retrained.state_dict())
    with torch.no_grad():
        edited[1].bias[0] -= 100.0  # never predicts class 0
    train, test = Split(x[:200], y[:200]), Split(x[200:], y[200:])
    removed = torch.arange(0, 200, 5)
    edit = Edit(train, removed, eval_sets={"self": train.subset(removed), "test": test, "val": test})
    reference = oracle.Reference.of(retrained, edit, seed=0)
    members = oracle._retained(edit, 0)

    def acc(model, split):
        return 100.0 * float((model(split.x).argmax(1) == split.y).double().mean())

    expect = 1.0
    for split in (edit.eval_sets["self"], members, test):
        expect *= 1.0 - abs(acc(edited, split) - acc(retrained, split)) / 100.0
    got = oracle.against_oracle(edited, edit, reference, seed=0)
    assert got["tow"] == pytest.approx(expect) and got["tow"] < 0.9  # class 0 is a third of the data
    assert got["retain_acc"] == pytest.approx(acc(edited, members))
    assert oracle.against_oracle(retrained, edit, reference, seed=0)["tow"] == 1.0
