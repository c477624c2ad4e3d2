"""The effects table: per searched factor (the seed axis excluded), per level and objective, the mean over its
complete trials with a 95% t interval, and the difference to the base level (the first in the search space's
order) with its interval: paired by seed (and every other searched parameter) where the trials match one to
one, else Welch's. ``harness.report.verdicts`` adds the verdict columns. docs/reports.md says more.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from harness.labels import label
from harness.report.comparability import basis_difference
from harness.report.stats import paired_interval, seeds_needed_paired, seeds_needed_welch, t_interval, welch_interval
from harness.report.verdicts import VERDICT_COLUMNS, add_verdicts

EFFECT_COLUMNS = [
    "factor",
    "level",
    "is_base",
    "objective",
    "direction",
    "n",
    "mean",
    "std",
    "ci_low",
    "ci_high",
    "base_level",
    "diff",
    "diff_ci_low",
    "diff_ci_high",
    "p_value",
    "test",
    "n_pairs",
    "comparable",
    "warning",
    *VERDICT_COLUMNS,  # harness.report.verdicts: relative difference, resolved, seeds needed, best level, sentence
]


# -- search space ------------------------------------------------------------------------------------
def seed_key(params: Iterable[str]) -> str | None:
    """The seed axis: the searched parameter whose dotted key ends with ``seed`` (``train.seed``)."""
    keys = [p for p in params if str(p).split(".")[-1].endswith("seed")]
    if "train.seed" in keys:
        return "train.seed"
    return keys[0] if keys else None


def choice_label(choice: Any) -> str:
    """The label of one search-space choice as the runner writes it to ``params_json`` (``harness.config.space.
    label``: a scalar as it is, a component spec as ``name(key=value, ...)``), as a string."""
    return str(label(choice))


def _space_choices(entry: Any) -> list[Any] | None:
    if isinstance(entry, list | tuple):
        return list(entry)
    if isinstance(entry, Mapping):
        for key in ("choices", "levels", "values"):
            if isinstance(entry.get(key), list | tuple):
                return list(entry[key])
    return None  # a range: levels are ordered by value


def level_order(space: Mapping[str, Any], frame: pd.DataFrame, param: str) -> list[str]:
    """Levels of ``param`` (as strings) in the search space's order; levels seen in the data but not in the
    space follow in order of value (ranges) or of first appearance by trial number (anything else)."""
    if param not in frame.columns:
        return []
    seen = [str(v) for v in frame.sort_values("trial_number")[param] if not _missing(v)]
    seen = list(dict.fromkeys(seen))
    choices = _space_choices(space.get(param))
    if choices is None:
        numeric = pd.to_numeric(pd.Series(seen, dtype=object), errors="coerce")
        if len(seen) and numeric.notna().all():
            return [s for _, s in sorted(zip(numeric, seen, strict=True))]
        return seen
    listed = [choice_label(c) for c in choices]
    ordered = [label for label in dict.fromkeys(listed) if label in seen]
    return ordered + [s for s in seen if s not in ordered]


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and np.isnan(value))


def objective_list(objectives: Sequence[Mapping[str, Any]] | None, columns: Iterable[str]) -> list[dict]:
    """Objectives as ``[{"metric", "direction"}]``; FID (minimize) when the study named none."""
    out = [{"metric": str(o["metric"]), "direction": str(o.get("direction", "minimize"))} for o in objectives or []]
    if not out and "fid" in set(columns):
        out = [{"metric": "fid", "direction": "minimize"}]
    return out


# -- effects -----------------------------------------------------------------------------------------
def _keyed(rows: pd.DataFrame, keys: list[str], metric: str) -> pd.Series | None:
    """Values indexed by the other parameters; None when a key repeats (no one-to-one pairing)."""
    if not keys:
        return None
    index = rows[keys].astype(str).agg("\x1f".join, axis=1)
    if index.duplicated().any():
        return None
    return pd.Series(rows[metric].to_numpy(dtype=float), index=index.to_numpy())


def effects(
    frame: pd.DataFrame,
    factors: Sequence[str],
    objectives: Sequence[Mapping[str, Any] | str],
    seed_key: str | None,
    levels: Mapping[str, Sequence[str]] | None = None,
    params: Sequence[str] | None = None,
) -> pd.DataFrame:
    """The effects table: one row per (factor, level, objective) over complete trials with a finite value.

    ``frame``: one row per trial (``harness.results.load``'s shape), a ``state`` column, one column per
    parameter and per objective, optionally ``<objective>_basis`` (see ``add_basis_columns``).
    ``levels``: each factor's level order (strings; the first is the base); default: order of appearance.
    ``params``: every searched parameter (pairing matches on all of them but the factor); default:
    ``factors`` plus ``seed_key``. Columns: ``EFFECT_COLUMNS``."""
    objectives = [{"metric": o, "direction": "minimize"} if isinstance(o, str) else dict(o) for o in objectives]
    params = list(params) if params is not None else [*factors, *([seed_key] if seed_key else [])]
    done = frame[frame["state"] == "complete"] if "state" in frame.columns else frame
    rows = []
    for factor in factors:
        if factor == seed_key or factor not in done.columns:
            continue
        order = list((levels or {}).get(factor) or dict.fromkeys(done[factor].dropna().astype(str)))
        others = [p for p in params if p != factor and p in done.columns]
        for obj in objectives:
            metric = obj["metric"]
            if metric not in done.columns:
                continue
            valid = done[np.isfinite(pd.to_numeric(done[metric], errors="coerce").astype(float))]
            by_level = {lv: valid[valid[factor].astype(str) == lv] for lv in order}
            base_level = next((lv for lv in order if len(by_level[lv])), order[0] if order else None)
            for level in order:
                rows.append(_effect_row(factor, level, base_level, obj, by_level, others, metric))
    table = pd.DataFrame(rows, columns=[c for c in EFFECT_COLUMNS if c not in VERDICT_COLUMNS] + ["seeds_needed"])
    return add_verdicts(table)[EFFECT_COLUMNS]


def _effect_row(factor, level, base_level, obj, by_level, others, metric) -> dict[str, Any]:
    here, base = by_level[level], by_level.get(base_level, by_level[level].iloc[:0])
    mean, std, low, high = t_interval(here[metric])
    row = {
        "factor": factor,
        "level": level,
        "is_base": level == base_level,
        "objective": metric,
        "direction": obj.get("direction", "minimize"),
        "n": len(here),
        "mean": mean,
        "std": std,
        "ci_low": low,
        "ci_high": high,
        "base_level": base_level,
        "diff": np.nan,
        "diff_ci_low": np.nan,
        "diff_ci_high": np.nan,
        "p_value": np.nan,
        "test": "base" if level == base_level else "n/a",
        "n_pairs": 0,
        "comparable": True,
        "warning": "",
        "seeds_needed": pd.NA,  # seeds per arm that would resolve a difference of this size (harness.report.stats)
    }
    basis_col = f"{metric}_basis"
    if basis_col in here.columns:
        involved = sorted(set(pd.concat([here[basis_col], base[basis_col]]).dropna()))
        if len(involved) > 1:
            row["comparable"] = False
            row["warning"] = f"{metric} computed on different bases: {basis_difference(involved)}"
    if level == base_level or len(here) == 0 or len(base) == 0:
        return row
    a, b = _keyed(here, others, metric), _keyed(base, others, metric)
    if a is not None and b is not None and set(a.index) == set(b.index) and len(a) >= 2:
        d = a - b.reindex(a.index)
        row["diff"], row["diff_ci_low"], row["diff_ci_high"], row["p_value"] = paired_interval(d)
        row["test"], row["n_pairs"] = "paired t", len(d)
        needed = seeds_needed_paired(float(d.std(ddof=1)), row["diff"])
    else:
        row["diff"], row["diff_ci_low"], row["diff_ci_high"], row["p_value"] = welch_interval(
            here[metric], base[metric]
        )
        row["test"] = "Welch t"
        spread = [float(np.std(v, ddof=1)) if len(v) > 1 else np.nan for v in (here[metric], base[metric])]
        needed = seeds_needed_welch(*spread, row["diff"])
    row["seeds_needed"] = pd.NA if needed is None else needed
    return row
