"""The numbers a report shows, extracted once: per-factor effects with confidence intervals, FID/KID
comparability. ``harness.report``, ``python -m harness.query --summary`` and
``harness.results.summary`` all read through this module, so a paper, a notebook and a script quote the
same numbers.

Statistics (docs/reports.md says more):

- For each searched factor except the seed axis, and each level of it, the objective's mean, sample
  standard deviation (ddof=1), n and a 95% Student-t confidence interval over the complete trials at that
  level (across seeds, and across the other factors' levels in a grid).
- The difference of each level to the base (control) level, the first level in the search space's order.
  *Paired*: when the level's trials and the base's trials match one-to-one on every other searched
  parameter (the seed included), the differences of matched pairs get a one-sample t interval.
  *Welch*: otherwise, the difference of means gets Welch's unequal-variance t interval.
- The verdict (``harness.verdicts``): the difference relative to the base mean, whether its interval
  excludes 0 ("resolved") and, if not, about how many seeds per arm would resolve a difference of this size
  (``harness.stats``: power of the same t test at the observed spread, alpha 0.05, power 0.8).

The intervals live in ``harness.stats`` and are re-exported here for the callers that import them from here.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from harness.checks import FIDELITY_COLUMNS, confounded_factors, fidelity_by_level, fidelity_warnings
from harness.errors import UsageError
from harness.results import scalar_metrics, trials_with_params
from harness.space import label
from harness.stats import CONFIDENCE as CONFIDENCE  # re-exported: callers import the intervals from here
from harness.stats import paired_interval, seeds_needed_paired, seeds_needed_welch, welch_interval
from harness.stats import t_interval as t_interval
from harness.store import Store
from harness.verdicts import VERDICT_COLUMNS, add_verdicts, verdicts

# attrs that must agree for two values of a sample-based metric (FID, KID, ...) to be compared; others
# (a cache hit, KID's subset seed, a weights file's path) may differ without harm
BASIS_KEYS = (
    "n_generated", "n_reference", "reference", "reference_fingerprint", "mode", "extractor", "image_shape",
    "library", "num_subsets", "subset_size",
)  # fmt: skip
GUARDED_METRICS = ("fid", "kid")
PROVENANCE_COLUMNS = ["host", "device", "git_revision", "torch_version", "cuda_version", "config_json", "env_json"]

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
    *VERDICT_COLUMNS,  # harness.verdicts: relative difference, resolved, seeds needed, best level, sentence
]


# -- search space ------------------------------------------------------------------------------------
def seed_key(params: Iterable[str]) -> str | None:
    """The seed axis: the searched parameter whose dotted key ends with ``seed`` (``train.seed``)."""
    keys = [p for p in params if str(p).split(".")[-1].endswith("seed")]
    if "train.seed" in keys:
        return "train.seed"
    return keys[0] if keys else None


def choice_label(choice: Any) -> str:
    """The label of one search-space choice as the runner writes it to ``params_json`` (``harness.space.
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


# -- comparability of sample-based metrics ------------------------------------------------------------
def metric_bases(metrics: pd.DataFrame) -> pd.DataFrame:
    """One row per (trial, guarded scalar metric) with a value: ``trial_number``, ``name``, ``basis`` (a
    string of the attrs that must agree, e.g. ``n_generated=5000, reference=cifar10:train``). Guarded: FID,
    KID and any scalar metric whose attrs carry a sample count or reference set."""
    rows = []
    scalar = metrics[metrics["step"].isna() & metrics["value"].notna()] if len(metrics) else metrics
    for rec in scalar.itertuples(index=False):
        attrs = json.loads(rec.attrs_json) if isinstance(rec.attrs_json, str) and rec.attrs_json else {}
        keyed = {k: _basis_value(attrs[k]) for k in BASIS_KEYS if k in attrs}
        if rec.name in GUARDED_METRICS or keyed:
            basis = ", ".join(f"{k}={v}" for k, v in keyed.items()) or "unrecorded"
            rows.append({"trial_number": int(rec.trial_number), "name": rec.name, "basis": basis})
    return pd.DataFrame(rows, columns=["trial_number", "name", "basis"]).drop_duplicates(
        ["trial_number", "name"], keep="last"
    )


def _basis_value(value: Any) -> str:
    """An attr as it enters a basis; a feature extractor is its name and weights' checksum, not its path."""
    if isinstance(value, Mapping):
        name, digest = value.get("name"), value.get("sha256")
        if name or digest:
            return f"{name or '?'}@{str(digest)[:12]}" if digest else str(name)
        return json.dumps(value, sort_keys=True)
    if isinstance(value, list | tuple):
        return "x".join(map(str, value))
    return str(value)


def add_basis_columns(frame: pd.DataFrame, bases: pd.DataFrame) -> tuple[pd.DataFrame, dict[str, list[str]]]:
    """Add ``<metric>_basis`` and ``<metric>_comparable`` (True when the trial's basis is the study's most
    common one) per guarded metric; returns (frame, {metric: distinct bases, most common first})."""
    frame = frame.copy()
    distinct: dict[str, list[str]] = {}
    for name, group in bases.groupby("name", sort=True):
        counts = group["basis"].value_counts()
        distinct[str(name)] = list(counts.index)
        by_trial = dict(zip(group["trial_number"], group["basis"], strict=True))
        frame[f"{name}_basis"] = frame["trial_number"].map(by_trial)
        has = frame[f"{name}_basis"].notna()
        frame[f"{name}_comparable"] = np.where(has, frame[f"{name}_basis"] == counts.index[0], pd.NA)
    return frame, distinct


def basis_difference(bases: Sequence[str]) -> str:
    """Only the attrs in which ``bases`` differ: ``n_generated=256 | n_generated=1024``."""
    parsed = [dict(part.partition("=")[::2] for part in b.split(", ")) for b in bases]
    keys = [k for k in dict.fromkeys(k for p in parsed for k in p) if len({p.get(k) for p in parsed}) > 1]
    if not keys:
        return " | ".join(bases)
    return " | ".join(", ".join(f"{k}={p.get(k, '?')}" for k in keys) for p in parsed)


def comparability_warnings(distinct: Mapping[str, list[str]]) -> list[str]:
    """One sentence per guarded metric computed on more than one basis."""
    return [
        f"{name.upper()} values in this study were computed on {len(b)} different bases "
        f"({basis_difference(b)}; full bases in trials.csv, column {name}_basis); values on different bases "
        f"are not comparable (PAPER.md section 6)."
        for name, b in distinct.items()
        if len(b) > 1
    ]


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
        "seeds_needed": pd.NA,  # seeds per arm that would resolve a difference of this size (harness.stats)
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


# -- one study, extracted -----------------------------------------------------------------------------
@dataclass
class StudyTables:
    """Everything a report or a summary needs from the database, as plain frames and lists."""

    name: str
    study: dict[str, Any] | None  # the harness_studies row (None: not recorded yet)
    search: dict[str, Any]  # {"sampler": ..., "space": {...}}
    objectives: list[dict[str, str]]  # [{"metric", "direction"}]
    params: list[str]  # searched parameters (dotted keys)
    seed_key: str | None
    factors: list[str]  # params without the seed axis
    levels: dict[str, list[str]]  # factor -> levels, base first
    trials: pd.DataFrame  # one row per trial (all columns)
    metric_names: list[str]  # scalar metrics, in column order
    metrics: pd.DataFrame  # the raw harness_metrics rows
    bases: dict[str, list[str]] = field(default_factory=dict)  # guarded metric -> distinct bases
    warnings: list[str] = field(default_factory=list)
    effects: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=EFFECT_COLUMNS))
    fidelity: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=FIDELITY_COLUMNS))
    fidelity_warnings: list[str] = field(default_factory=list)  # factors compared partly on their sampler

    def csv_columns(self) -> list[str]:
        """trials.csv: number, state, parameters, metrics (+ comparability flags), duration, error."""
        guard = [c for m in self.bases for c in (f"{m}_basis", f"{m}_comparable")]
        return ["trial_number", "state", *self.params, *self.metric_names, *guard, "duration_s", "error"]

    def verdicts(self) -> pd.DataFrame:
        """One row per (factor, objective): the best level against the base (``harness.verdicts.verdicts``)."""
        return verdicts(self.effects)

    def trial_csv(self) -> pd.DataFrame:
        return self.trials[self.csv_columns()].rename(columns={"trial_number": "number"})


def _json(text: Any, default: Any) -> Any:
    return json.loads(text) if isinstance(text, str) and text else default


def summarize(store: Store, study: str) -> StudyTables:
    """Extract one study from ``store``; a study with neither a harness_studies row nor trials is a
    UsageError (unknown name)."""
    row = store.study(study)
    frame, params = trials_with_params(store, study)
    if row is None and frame.empty:
        known = sorted(set(store.studies()["study_name"]) | set(store.trials()["study_name"]))
        hint = f" (known: {', '.join(known)})" if known else " (the database has no studies)"
        raise UsageError(f"--study: no study named {study!r} in the database{hint}")
    search = _json((row or {}).get("search_json"), {})
    space = search.get("space") or {}
    params = list(dict.fromkeys([*[k for k in space if k in frame.columns], *params]))
    metrics = store.metrics(study)
    wide = scalar_metrics(store, study)
    metric_names = [c for c in wide.columns if c not in ("study_name", "trial_number")]
    frame = frame.merge(wide, on=["study_name", "trial_number"], how="left")
    frame = frame.sort_values("trial_number", ignore_index=True)
    extra = store.trials(study)[["trial_number", *PROVENANCE_COLUMNS]]
    frame = frame.merge(extra, on="trial_number", how="left")
    frame, bases = add_basis_columns(frame, metric_bases(metrics))
    seed = seed_key(params)
    factors = [p for p in params if p != seed]
    levels = {p: level_order(space, frame, p) for p in params}
    objectives = objective_list(_json((row or {}).get("objectives_json"), []), metric_names)
    tables = StudyTables(
        name=study,
        study=row,
        search=search,
        objectives=objectives,
        params=params,
        seed_key=seed,
        factors=factors,
        levels=levels,
        trials=frame,
        metric_names=metric_names,
        metrics=metrics,
        bases=bases,
        warnings=comparability_warnings(bases),
    )
    tables.effects = effects(frame, factors, objectives, seed, levels=levels, params=params)
    tables.fidelity = fidelity_by_level(frame, factors, levels)
    tables.fidelity_warnings = fidelity_warnings(tables.fidelity)
    mark = tables.effects["factor"].isin(confounded_factors(tables.fidelity))
    note = "sampler fidelity differs between levels (see the sampler fidelity warning)"
    tables.effects.loc[mark, "warning"] = [f"{w}; {note}" if w else note for w in tables.effects.loc[mark, "warning"]]
    return tables
