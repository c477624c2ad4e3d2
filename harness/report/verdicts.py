"""The answer a study gives, per factor and objective: which level is best, by how much it differs from the base
(absolute and relative, with its 95% interval and p), and whether that is resolved (the interval excludes 0)
or, if not, about how many seeds per arm would resolve a difference of this size (``harness.report.stats``).

``add_verdicts`` completes the effects table (``harness.report.effects``) with the verdict columns;
``verdicts`` picks one row per (factor, objective): the best level against the base, or, when the base is
the best, the runner-up against it. ``headline`` writes that row as one plain sentence.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from harness.report.stats import ALPHA, MAX_SEEDS, POWER

VERDICT_COLUMNS = [
    "rel_diff", "rel_diff_ci_low", "rel_diff_ci_high", "resolved", "seeds_needed", "best_level", "verdict",
]  # fmt: skip
SUMMARY_COLUMNS = [  # one row per (factor, objective), as the report's verdict block and --summary show it
    "factor", "objective", "direction", "best_level", "base_level", "level", "base_mean", "mean", "diff",
    "diff_ci_low", "diff_ci_high", "rel_diff", "rel_diff_ci_low", "rel_diff_ci_high", "p_value", "test",
    "n_pairs", "n", "base_n", "resolved", "seeds_needed", "verdict", "warning", "headline",
]  # fmt: skip


def verdict(resolved: bool, has_ci: bool, diff: float, seeds_needed: float | None) -> str:
    """``resolved`` or ``not resolved: ...`` with the reason or the seeds per arm that would resolve it."""
    if resolved:
        return "resolved"
    if not has_ci:
        return "not resolved: needs at least 2 seeds per arm for an interval"
    if diff == 0:
        return "not resolved: no difference observed"
    if seeds_needed is None or pd.isna(seeds_needed):
        return "not resolved: the spread is unknown, so the seeds needed cannot be estimated"
    if seeds_needed > MAX_SEEDS:
        return f"not resolved: more than {MAX_SEEDS} seeds per arm would be needed to resolve a difference of this size"
    return f"not resolved: about {int(seeds_needed)} seeds per arm would resolve a difference of this size"


def add_verdicts(effects: pd.DataFrame) -> pd.DataFrame:
    """The effects table with ``VERDICT_COLUMNS`` filled: the relative difference (diff / |base mean|, its
    interval the absolute one scaled alike), ``resolved`` (interval excludes 0; NA on base rows), the best
    level of each (factor, objective) and a verdict sentence per non-base row. ``seeds_needed`` is expected
    from ``harness.report.effects`` (it needs the trials' spread)."""
    out = effects.copy()
    base_mean = out.groupby(["factor", "objective"], sort=False)[["is_base", "mean"]].apply(_base_mean)
    key = list(zip(out["factor"], out["objective"], strict=True))
    scale = np.abs(np.array([base_mean.get(k, np.nan) for k in key], dtype=float))
    scale[scale == 0] = np.nan
    for col, src in (("rel_diff", "diff"), ("rel_diff_ci_low", "diff_ci_low"), ("rel_diff_ci_high", "diff_ci_high")):
        out[col] = pd.to_numeric(out[src], errors="coerce").to_numpy(dtype=float) / scale
    has_ci = out["diff_ci_low"].notna() & out["diff_ci_high"].notna()
    excludes = has_ci & ((out["diff_ci_low"] > 0) | (out["diff_ci_high"] < 0))
    out["resolved"] = pd.Series(excludes, dtype=object).where(~out["is_base"].astype(bool), np.nan)
    out["seeds_needed"] = pd.to_numeric(out.get("seeds_needed", pd.Series(np.nan, index=out.index)), errors="coerce")
    out["seeds_needed"] = out["seeds_needed"].astype("Int64")
    best = out.groupby(["factor", "objective"], sort=False)[["level", "mean", "n", "direction"]].apply(_best)
    out["best_level"] = [best.get(k, "") for k in key]
    out["verdict"] = [
        "" if is_base or n == 0 else verdict(bool(r), bool(c), d, s)
        for is_base, n, r, c, d, s in zip(
            out["is_base"], out["n"], excludes, has_ci, out["diff"], out["seeds_needed"], strict=True
        )
    ]
    return out


def _base_mean(group: pd.DataFrame) -> float:
    base = group.loc[group["is_base"].astype(bool), "mean"]
    return float(base.iloc[0]) if len(base) else np.nan


def _best(group: pd.DataFrame) -> str:
    ran = group[(group["n"] > 0) & group["mean"].notna()]
    if ran.empty:
        return ""
    sign = -1.0 if str(ran["direction"].iloc[0]) == "maximize" else 1.0
    return str(ran["level"].iloc[int(np.argmin(sign * ran["mean"].to_numpy(dtype=float)))])


def verdicts(effects: pd.DataFrame) -> pd.DataFrame:
    """One row per (factor, objective) with ``SUMMARY_COLUMNS``: the best level against the base, or the
    runner-up against the base when the base is best (``level`` names the compared level)."""
    rows = []
    for (factor, objective), group in effects.groupby(["factor", "objective"], sort=False):
        base = group[group["is_base"].astype(bool)]
        others = group[~group["is_base"].astype(bool) & (group["n"] > 0)]
        best = str(group["best_level"].iloc[0]) if len(group) else ""
        if base.empty or others.empty:
            rows.append(_lonely(factor, objective, group, best))
            continue
        sign = -1.0 if str(group["direction"].iloc[0]) == "maximize" else 1.0
        pick = others[others["level"] == best]
        if pick.empty:  # the base is best: its closest contender
            pick = others.iloc[[int(np.argmin(sign * others["mean"].to_numpy(dtype=float)))]]
        row = pick.iloc[0].to_dict()
        row["base_mean"], row["base_n"] = float(base["mean"].iloc[0]), int(base["n"].iloc[0])
        row["headline"] = headline(row)
        rows.append({c: row.get(c) for c in SUMMARY_COLUMNS})
    return pd.DataFrame(rows, columns=SUMMARY_COLUMNS)


def _lonely(factor: str, objective: str, group: pd.DataFrame, best: str) -> dict[str, Any]:
    ran = group[group["n"] > 0]
    text = (
        f"{factor}: only {ran['level'].iloc[0]} has complete trials with {objective}; nothing to compare yet."
        if len(ran)
        else f"{factor}: no complete trial has a value of {objective} yet."
    )
    direction = str(group["direction"].iloc[0]) if len(group) else ""
    return {c: None for c in SUMMARY_COLUMNS} | {
        "factor": factor, "objective": objective, "direction": direction, "best_level": best or None,
        "verdict": "not resolved: nothing to compare", "headline": text, "warning": "",
    }  # fmt: skip


def _num(value: float) -> str:
    return f"{value:.4g}"


def _pct(value: float) -> str:
    return "" if value is None or pd.isna(value) else f"{100 * value:+.1f} %"


def headline(row: dict[str, Any]) -> str:
    """One sentence: ``For swd, shifted_cosine beats cosine (the base) by 4.98 (-2.5 %), 95 % CI [-10.85, 0.88],
    p = 0.059, 2 paired seeds: not resolved: about 7 seeds per arm would resolve a difference of this size.``"""
    diff, level, base = float(row["diff"]), row["level"], row["base_level"]
    better = (diff < 0) == (row["direction"] != "maximize")
    base_best = row["best_level"] == base
    subject = f"{base} (the base) is best; the runner-up, {level}," if base_best else f"{level}"
    if diff == 0:
        compare = f"{subject} ties with {base}"
    else:
        word = ("beats" if better else "trails") if not base_best else "trails it"
        target = "" if base_best else f" {base} (the base)"
        compare = f"{subject} {word}{target} by {_num(abs(diff))} ({_pct(row['rel_diff'])})"
    parts = [f"For {row['objective']}, {row['factor']}: {compare}"]
    if not pd.isna(row["diff_ci_low"]):
        parts.append(f"95 % CI [{_num(row['diff_ci_low'])}, {_num(row['diff_ci_high'])}]")
    if not pd.isna(row["p_value"]):
        parts.append(f"p = {row['p_value']:.2g}")
    pairs = int(row["n_pairs"] or 0)
    welch = f"{int(row['n'])} trials vs the base's {int(row['base_n'])} (Welch)"
    parts.append(f"{pairs} paired seeds" if pairs else welch)
    text = ", ".join(parts) + f": {row['verdict']}."
    if row.get("warning"):
        text += f" Caution: {row['warning']}."
    return text


__all__ = ["ALPHA", "POWER", "SUMMARY_COLUMNS", "VERDICT_COLUMNS", "add_verdicts", "headline", "verdict", "verdicts"]
