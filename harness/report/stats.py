"""Student-t intervals for means and differences, and the sample size that would resolve a difference.

Intervals (95% by default): a mean's one-sample t interval; a difference of means by Welch's unequal-variance
t; the mean of paired differences by a one-sample t. Sample size: the smallest number of seeds per arm n at
which a two-sided t test at level ``alpha`` rejects "no difference" with probability ``power`` when the true
difference is the observed one and the true spread is the observed one. The power of a t test with ``df``
degrees of freedom and noncentrality ``nc`` is P(|T| > t(1 - alpha/2, df)) for T ~ noncentral t(df, nc):

- paired (one-sample t on the differences d): df = n - 1, nc = delta * sqrt(n) / sd(d);
- Welch (n seeds in each arm): nc = delta / sqrt((s_a^2 + s_b^2) / n), df = (n - 1) (s_a^2 + s_b^2)^2 /
  (s_a^4 + s_b^4) (Welch-Satterthwaite with equal n).

This is the exact power of the t test (as in G*Power or statsmodels' ``TTestPower``), not the normal
approximation n = ((z(1 - alpha/2) + z(power)) sd / delta)^2, which it exceeds by one to three seeds at small n.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

CONFIDENCE = 0.95
ALPHA = 0.05  # two-sided level of the test behind "resolved"
POWER = 0.80  # the probability of resolving a true difference of the observed size
MAX_SEEDS = 10_000  # above this, a sample-size estimate says "more than MAX_SEEDS"


def _stats():
    """``scipy.stats``, imported on first use."""
    # deferred: scipy.stats takes about half a second to import, which `harness.query` without --summary never uses
    from scipy import stats

    return stats


def t_interval(values: Sequence[float], confidence: float = CONFIDENCE) -> tuple[float, float, float, float]:
    """(mean, std, ci_low, ci_high) with a Student-t interval; std and CI are NaN for n < 2."""
    x = np.asarray(values, dtype=float)
    if len(x) == 0:
        return (np.nan,) * 4
    mean = float(x.mean())
    if len(x) < 2:
        return mean, np.nan, np.nan, np.nan
    std = float(x.std(ddof=1))
    half = float(_stats().t.ppf(0.5 + confidence / 2, len(x) - 1)) * std / np.sqrt(len(x))
    return mean, std, mean - half, mean + half


def welch_interval(a: Sequence[float], b: Sequence[float], confidence: float = CONFIDENCE) -> tuple[float, ...]:
    """mean(a) - mean(b): (diff, ci_low, ci_high, p_value) by Welch's t; NaN CI when a side has n < 2."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    diff = float(a.mean() - b.mean())
    if len(a) < 2 or len(b) < 2:
        return diff, np.nan, np.nan, np.nan
    va, vb = a.var(ddof=1) / len(a), b.var(ddof=1) / len(b)
    se = np.sqrt(va + vb)
    if se == 0:
        return diff, diff, diff, (1.0 if diff == 0 else 0.0)
    df = (va + vb) ** 2 / (va**2 / (len(a) - 1) + vb**2 / (len(b) - 1))
    half = float(_stats().t.ppf(0.5 + confidence / 2, df)) * se
    p = float(2 * _stats().t.sf(abs(diff) / se, df))
    return diff, diff - half, diff + half, p


def paired_interval(d: Sequence[float], confidence: float = CONFIDENCE) -> tuple[float, ...]:
    """Mean of paired differences ``d``: (diff, ci_low, ci_high, p_value) by a one-sample t."""
    d = np.asarray(d, dtype=float)
    mean, std, low, high = t_interval(d, confidence)
    if len(d) < 2:
        return mean, np.nan, np.nan, np.nan
    if std == 0:
        return mean, mean, mean, (1.0 if mean == 0 else 0.0)
    p = float(2 * _stats().t.sf(abs(mean) / (std / np.sqrt(len(d))), len(d) - 1))
    return mean, low, high, p


def t_test_power(df: float, nc: float, alpha: float = ALPHA) -> float:
    """Power of a two-sided t test: P(|T| > t(1 - alpha/2, df)) for T ~ noncentral t(df, nc)."""
    crit = float(_stats().t.ppf(1 - alpha / 2, df))
    power = float(_stats().nct.sf(crit, df, nc) + _stats().nct.cdf(-crit, df, nc))
    if math.isfinite(power):
        return power
    # SciPy's noncentral t returns NaN far in its tails (large nc, where the power is close to 1): there the
    # usual normal approximation P(T > c) ~ Phi((nc - c) / sqrt(1 + c^2 / (2 df))) (a few per cent off at df = 1,
    # closer with more df) decides whether n is enough
    scale = math.sqrt(1 + crit**2 / (2 * df))
    return float(_stats().norm.sf((crit - abs(nc)) / scale) + _stats().norm.cdf((-crit - abs(nc)) / scale))


def paired_power(n: int, sd: float, delta: float, alpha: float = ALPHA) -> float:
    """Power of the paired t test with ``n`` pairs whose differences have standard deviation ``sd``."""
    return t_test_power(n - 1, abs(delta) * math.sqrt(n) / sd, alpha)


def welch_power(n: int, sd_a: float, sd_b: float, delta: float, alpha: float = ALPHA) -> float:
    """Power of Welch's t test with ``n`` seeds in each arm (standard deviations ``sd_a``, ``sd_b``)."""
    va, vb = sd_a**2, sd_b**2
    df = (n - 1) * (va + vb) ** 2 / (va**2 + vb**2)
    return t_test_power(df, abs(delta) / math.sqrt((va + vb) / n), alpha)


def seeds_needed_paired(sd: float, delta: float, alpha: float = ALPHA, power: float = POWER) -> int | None:
    """Smallest number of pairs (seeds per arm, n >= 2) at which the paired t test reaches ``power`` for a
    true difference ``delta`` with paired standard deviation ``sd``; None when it cannot be estimated (sd
    missing or 0, delta 0 or missing); MAX_SEEDS + 1 when more than MAX_SEEDS would be needed."""
    if not _estimable(sd, delta):
        return None
    return _smallest(lambda n: paired_power(n, sd, delta, alpha) >= power)


def seeds_needed_welch(
    sd_a: float, sd_b: float, delta: float, alpha: float = ALPHA, power: float = POWER
) -> int | None:
    """As ``seeds_needed_paired`` for two independent arms of n seeds each, by Welch's t test."""
    if not (_estimable(math.hypot(sd_a, sd_b), delta) and np.isfinite(sd_a) and np.isfinite(sd_b)):
        return None
    return _smallest(lambda n: welch_power(n, sd_a, sd_b, delta, alpha) >= power)


def _estimable(sd: float, delta: float) -> bool:
    return bool(np.isfinite(sd) and np.isfinite(delta) and sd > 0 and delta != 0)


def _smallest(enough) -> int:
    """Smallest n in [2, MAX_SEEDS] with ``enough(n)`` (power rises with n: doubling, then bisection)."""
    high = 2
    while not enough(high):
        if high > MAX_SEEDS:
            return MAX_SEEDS + 1
        high *= 2
    low = high // 2  # enough(high) holds; enough(low) does not (or low < 2)
    while high - low > 1:
        mid = (low + high) // 2
        low, high = (low, mid) if enough(mid) else (mid, high)
    return max(high, 2)
