"""harness.report.stats' sample-size estimate and harness.report.verdicts' sentences, against hand computations.

The power of a two-sided t test is computed here independently of SciPy's noncentral t: T = (Z + nc) / sqrt(V / df)
with Z standard normal and V chi-square(df), so P(T > c) = E_V[P(Z > c sqrt(V / df) - nc)], integrated over V
with quadrature. The smallest n is then found by counting up from 2.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import integrate, stats

from harness.report.effects import effects
from harness.report.stats import (
    MAX_SEEDS,
    paired_power,
    seeds_needed_paired,
    seeds_needed_welch,
    welch_power,
)
from harness.report.verdicts import headline, verdict, verdicts


def power_by_hand(df: float, nc: float, alpha: float = 0.05) -> float:
    c = stats.t.ppf(1 - alpha / 2, df)

    def tail(sign: float) -> float:  # P(sign * T > c)
        f = lambda v: stats.norm.sf(c * math.sqrt(v / df) - sign * nc) * stats.chi2.pdf(v, df)  # noqa: E731
        return integrate.quad(f, 0, np.inf, limit=200)[0]

    return tail(1.0) + tail(-1.0)


def smallest_n_by_hand(power_at, sd: float, delta: float) -> int:
    """Counting up from the normal approximation n = ((z(0.975) + z(0.8)) sd / delta)^2, which is a lower bound
    (a t test has less power than a z test at the same noncentrality)."""
    z = stats.norm.ppf(0.975) + stats.norm.ppf(0.8)
    n = max(2, math.ceil((z * sd / abs(delta)) ** 2))
    while power_at(n) < 0.8:
        n += 1
    return n


@pytest.mark.parametrize(("sd", "delta"), [(1.0, 0.8), (2.0, 3.0), (0.33, 5.63), (4.0, -3.0)])
def test_paired_seeds_needed_is_the_smallest_n_with_80_percent_power(sd, delta):
    by_hand = smallest_n_by_hand(lambda n: power_by_hand(n - 1, abs(delta) * math.sqrt(n) / sd), sd, delta)
    assert seeds_needed_paired(sd, delta) == by_hand
    assert paired_power(by_hand, sd, delta) == pytest.approx(
        power_by_hand(by_hand - 1, abs(delta) * math.sqrt(by_hand) / sd), abs=1e-6
    )


@pytest.mark.parametrize(("sd_a", "sd_b", "delta"), [(1.0, 1.0, 0.8), (1.0, 3.0, 2.0), (0.5, 0.2, 0.4)])
def test_welch_seeds_needed_is_the_smallest_n_per_arm_with_80_percent_power(sd_a, sd_b, delta):
    def power_at(n: int) -> float:
        va, vb = sd_a**2, sd_b**2
        df = (n - 1) * (va + vb) ** 2 / (va**2 + vb**2)
        return power_by_hand(df, delta / math.sqrt((va + vb) / n))

    by_hand = smallest_n_by_hand(power_at, math.hypot(sd_a, sd_b), delta)
    assert seeds_needed_welch(sd_a, sd_b, delta) == by_hand
    assert welch_power(by_hand, sd_a, sd_b, delta) >= 0.8 > welch_power(by_hand - 1, sd_a, sd_b, delta)


def test_published_sample_sizes():
    """G*Power / Cohen (1988): two-sided alpha 0.05, power 0.8. One-sample (paired) t: d = 0.5 needs 34,
    d = 0.8 needs 15; two independent samples: 64 and 26 per group."""
    assert [seeds_needed_paired(1.0, d) for d in (0.5, 0.8)] == [34, 15]
    assert [seeds_needed_welch(1.0, 1.0, d) for d in (0.5, 0.8)] == [64, 26]


def test_unestimable_and_huge():
    assert seeds_needed_paired(0.0, 1.0) is None and seeds_needed_paired(1.0, 0.0) is None
    assert seeds_needed_paired(float("nan"), 1.0) is None and seeds_needed_welch(1.0, float("nan"), 1.0) is None
    assert seeds_needed_paired(1.0, 1e-4) == MAX_SEEDS + 1
    assert paired_power(3, 0.01, 100.0) == pytest.approx(1.0)  # SciPy's noncentral t gives NaN this far out


def test_verdict_sentences():
    assert verdict(True, True, -1.0, 5) == "resolved"
    assert (
        verdict(False, True, -1.0, 7) == "not resolved: about 7 seeds per arm would resolve a difference of this size"
    )
    assert verdict(False, False, -1.0, None) == "not resolved: needs at least 2 seeds per arm for an interval"
    assert verdict(False, True, 0.0, None) == "not resolved: no difference observed"
    assert verdict(False, True, 1.0, MAX_SEEDS + 1).startswith(f"not resolved: more than {MAX_SEEDS} seeds")


def frame(values_a, values_b, seeds_a=(0, 1, 2), seeds_b=(0, 1, 2)) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "trial_number": range(len(values_a) + len(values_b)),
            "state": "complete",
            "f": ["a"] * len(values_a) + ["b"] * len(values_b),
            "train.seed": [*seeds_a, *seeds_b],
            "y": [*values_a, *values_b],
        }
    )


def test_unresolved_paired_effect_names_the_seeds_by_hand():
    a, b = np.array([10.0, 12.0, 11.0]), np.array([9.0, 12.5, 9.6])  # d = [-1, 0.5, -1.4]: CI includes 0
    table = effects(frame(a, b), ["f"], ["y"], "train.seed", levels={"f": ["a", "b"]})
    row = table[table["level"] == "b"].iloc[0]
    d = b - a
    sd = d.std(ddof=1)
    n = smallest_n_by_hand(lambda k: power_by_hand(k - 1, abs(d.mean()) * math.sqrt(k) / sd), sd, d.mean())
    assert row["test"] == "paired t" and row["resolved"] is False and row["seeds_needed"] == n
    assert row["verdict"] == f"not resolved: about {n} seeds per arm would resolve a difference of this size"
    assert row["rel_diff"] == pytest.approx(d.mean() / a.mean())
    assert row["rel_diff_ci_low"] == pytest.approx(row["diff_ci_low"] / a.mean())
    assert row["best_level"] == "b"  # lower is better by default
    (summary,) = verdicts(table).to_dict("records")
    assert summary["level"] == "b" and summary["base_level"] == "a" and summary["n_pairs"] == 3
    assert headline(summary) == (
        f"For y, f: b beats a (the base) by {abs(d.mean()):.4g} ({100 * d.mean() / a.mean():+.1f} %), "
        f"95 % CI [{row['diff_ci_low']:.4g}, {row['diff_ci_high']:.4g}], p = {row['p_value']:.2g}, 3 paired seeds: "
        f"not resolved: about {n} seeds per arm would resolve a difference of this size."
    )


def test_welch_effect_and_a_base_that_is_best():
    a, b = [1.0, 1.2, 0.9], [3.0, 4.2, 2.9, 3.8]
    table = effects(frame(a, b, seeds_b=(0, 1, 3, 4)), ["f"], ["y"], "train.seed", levels={"f": ["a", "b"]})
    row = table[table["level"] == "b"].iloc[0]
    assert row["test"] == "Welch t" and row["resolved"] is True and row["verdict"] == "resolved"
    assert row["seeds_needed"] == seeds_needed_welch(np.std(b, ddof=1), np.std(a, ddof=1), row["diff"])
    (summary,) = verdicts(table).to_dict("records")
    assert summary["best_level"] == "a" and summary["level"] == "b"  # the base wins: the runner-up is compared
    assert headline(summary).startswith("For y, f: a (the base) is best; the runner-up, b, trails it by")
    assert "4 trials vs the base's 3 (Welch): resolved." in headline(summary)
    maximize = effects(frame(a, b, seeds_b=(0, 1, 3, 4)), ["f"], [{"metric": "y", "direction": "maximize"}], None)
    assert set(maximize["best_level"]) == {"b"}
