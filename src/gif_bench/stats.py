"""Statistics of the tables, from ``scipy.stats``: confidence intervals, paired comparisons on
the same seeds, and which method (if any) is significantly best.

Runs of one seed share the trained model and the oracle, so methods are compared by pairs of
runs on the same seed: the paired t-test (Student t on the per-seed differences), and
Wilcoxon's signed-rank test where there are at least 6 pairs (below that its exact p-value
cannot reach 0.05).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

CONFIDENCE = 0.95
ALPHA = 0.05
WILCOXON_MIN_PAIRS = 6


def mean_ci(values, confidence: float = CONFIDENCE) -> tuple[float, float]:
    """(mean, half-width of its Student-t confidence interval); the half-width is NaN for fewer
    than two values and 0 when they are all equal."""
    v = np.asarray(values, dtype=float)
    v = v[~np.isnan(v)]
    if len(v) == 0:
        return math.nan, math.nan
    mean = float(v.mean())
    if len(v) < 2:
        return mean, math.nan
    sem = float(stats.sem(v))
    if sem == 0.0:
        return mean, 0.0
    low, high = stats.t.interval(confidence, len(v) - 1, loc=mean, scale=sem)
    return mean, float(high - low) / 2


@dataclass(frozen=True)
class Paired:
    """``a − b`` over the seeds both have: ``n`` pairs, the mean difference and its CI, the
    paired t-test's two-sided p-value and, for ``n ≥ 6``, Wilcoxon's."""

    n: int
    mean_diff: float
    ci_low: float
    ci_high: float
    p_t: float
    p_wilcoxon: float


def paired(a: pd.Series, b: pd.Series, confidence: float = CONFIDENCE) -> Paired:
    """Compare two Series indexed by seed on their common seeds (NaNs dropped)."""
    both = pd.concat([a.rename("a"), b.rename("b")], axis=1, join="inner").dropna()
    n = len(both)
    diff = (both["a"] - both["b"]).to_numpy(dtype=float)
    if n < 2:
        return Paired(n, float(diff.mean()) if n else math.nan, math.nan, math.nan, math.nan, math.nan)
    if np.all(diff == diff[0]):  # no spread: the t statistic is undefined (0/0) or infinite
        p = 1.0 if diff[0] == 0 else 0.0
        return Paired(n, float(diff[0]), float(diff[0]), float(diff[0]), p, math.nan)
    test = stats.ttest_rel(both["a"], both["b"])
    ci = test.confidence_interval(confidence)
    p_w = float(stats.wilcoxon(diff).pvalue) if n >= WILCOXON_MIN_PAIRS else math.nan
    return Paired(n, float(diff.mean()), float(ci.low), float(ci.high), float(test.pvalue), p_w)


def significantly_best(series: dict, better: str, alpha: float = ALPHA) -> tuple[object | None, list]:
    """``(best, tied)`` among ``series`` (key → Series of a metric indexed by seed).

    The candidate is the key of the best mean (``better``: ``max`` or ``min``). It is ``best``
    only if it beats every other at p < ``alpha`` (paired t-test) in the right direction; else
    ``best`` is ``None`` and ``tied`` lists the candidate and every key not significantly worse.
    """
    means = {k: s.mean() for k, s in series.items() if s.notna().any()}
    if not means:
        return None, []
    top = max(means, key=means.get) if better == "max" else min(means, key=means.get)
    sign = 1.0 if better == "max" else -1.0
    tied = [top]
    for key in means:
        if key == top:
            continue
        result = paired(series[top], series[key])
        if not (result.p_t < alpha and sign * result.mean_diff > 0):
            tied.append(key)
    return (top, []) if len(tied) == 1 else (None, tied)
