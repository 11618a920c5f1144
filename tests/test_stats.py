"""Confidence intervals, paired tests and significant bests against scipy.stats on known numbers."""

import json
import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sp

from gif_bench import stats


def test_the_ci_is_students_t_interval():
    values = [91.2, 90.1, 92.8, 89.9, 91.5]
    mean, half = stats.mean_ci(values)
    low, high = sp.t.interval(0.95, 4, loc=np.mean(values), scale=sp.sem(values))
    assert mean == pytest.approx(91.1) and half == pytest.approx((high - low) / 2)
    assert half == pytest.approx(sp.t.ppf(0.975, 4) * np.std(values, ddof=1) / math.sqrt(5))
    assert stats.mean_ci([3.0])[1] != stats.mean_ci([3.0])[1]  # NaN: no interval from one value
    assert stats.mean_ci([2.0, 2.0, 2.0]) == (2.0, 0.0)


def test_the_paired_comparison_is_scipys_paired_t_test_and_wilcoxon_from_six_pairs():
    a = pd.Series([0.90, 0.92, 0.88, 0.95, 0.91, 0.93, 0.89], index=range(7))
    b = pd.Series([0.85, 0.90, 0.86, 0.90, 0.92, 0.88, 0.84], index=range(7))
    result = stats.paired(a, b)
    ref = sp.ttest_rel(a, b)
    assert result.n == 7 and result.mean_diff == pytest.approx((a - b).mean())
    assert result.p_t == pytest.approx(ref.pvalue)
    assert (result.ci_low, result.ci_high) == pytest.approx(tuple(ref.confidence_interval(0.95)))
    assert result.p_wilcoxon == pytest.approx(sp.wilcoxon(a - b).pvalue)
    few = stats.paired(a[:5], b[:5])
    assert math.isnan(few.p_wilcoxon) and few.p_t == pytest.approx(sp.ttest_rel(a[:5], b[:5]).pvalue)
    shifted = stats.paired(a, b.set_axis(range(3, 10)))  # pairs only on the seeds both have
    assert shifted.n == 4


def test_best_is_refused_for_a_difference_that_is_not_significant():
    seeds = range(5)
    close = {
        "gif": pd.Series([91.0, 89.0, 93.0, 90.0, 92.0], index=seeds),
        "freezing": pd.Series([90.0, 90.0, 92.0, 89.0, 93.0], index=seeds),  # mean 90.8 vs 91.0
        "koh": pd.Series([80.0, 81.0, 79.0, 82.0, 80.0], index=seeds),
    }
    assert sp.ttest_rel(close["gif"], close["freezing"]).pvalue > 0.05
    best, tied = stats.significantly_best(close, "max")
    assert best is None and tied == ["gif", "freezing"]  # koh is significantly worse: not in the tie
    clear = {**close, "freezing": close["freezing"] - 5.0}
    assert stats.significantly_best(clear, "max") == ("gif", [])
    assert stats.significantly_best(close, "min") == ("koh", [])  # lower is better: koh, significantly


def test_rows_over_seeds_give_median_and_range_per_setting(tmp_path):
    from gif_bench.report import main, over_seeds

    folder = tmp_path / "results" / "quickstart"
    folder.mkdir(parents=True)
    base = {"experiment": "quickstart", "task": "backdoor", "dataset": "digits", "selector": "s", "status": "ok"}
    for seed, acc in enumerate((80.0, 99.0, 90.0)):
        row = {**base, "method": "gif", "mr": 0.05, "seed": seed, "test_acc": acc, "self_acc": 100.0 - acc}
        (folder / f"g{seed}.json").write_text(json.dumps(row))
    (folder / "k.json").write_text(json.dumps({**base, "method": "koh", "mr": 1.0, "seed": 0, "test_acc": 70.0}))
    (folder / "f.json").write_text(json.dumps({**base, "method": "koh", "mr": 1.0, "seed": 1, "status": "failed"}))
    table = over_seeds(tmp_path, "quickstart")
    gif = next(line for line in table.splitlines() if "| gif" in line)
    assert "90 [80, 99]" in gif and "10 [1, 20]" in gif and "|       3 |" in gif
    koh = next(line for line in table.splitlines() if "| koh" in line)
    assert "70 [70, 70]" in koh and "|       1 |" in koh  # the failed row is not a seed
    assert main(["--rows", "--over-seeds", "--root", str(tmp_path / "nowhere")]) == 1
