"""Every table of one study, extracted once (``study_tables``): trials with their parameters and metrics, the
effects table with its verdicts, FID/KID comparability, sampler fidelity per level. The report,
``python -m harness.query --summary`` and ``harness.results.summary`` all read through it, so a paper, a
notebook and a script quote the same numbers.

Statistics (docs/reports.md says more): the effects table (``harness.report.effects``), its verdict
(``harness.report.verdicts``: the difference relative to the base mean, whether its interval excludes 0 and, if
not, about how many seeds per arm would resolve it, from ``harness.report.stats``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from harness.errors import UsageError
from harness.report.caveats import FIDELITY_COLUMNS, confounded_factors, fidelity_by_level, fidelity_warnings
from harness.report.comparability import add_basis_columns, comparability_warnings, metric_bases
from harness.report.effects import EFFECT_COLUMNS, effects, level_order, objective_list, seed_key
from harness.report.frames import scalar_metrics, trials_with_params
from harness.report.verdicts import verdicts
from harness.store.tables import Store

PROVENANCE_COLUMNS = ["host", "device", "git_revision", "torch_version", "cuda_version", "config_json", "env_json"]


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
        """One row per (factor, objective): the best level against the base (``harness.report.verdicts.verdicts``)."""
        return verdicts(self.effects)

    def trial_csv(self) -> pd.DataFrame:
        return self.trials[self.csv_columns()].rename(columns={"trial_number": "number"})


def _json(text: Any, default: Any) -> Any:
    return json.loads(text) if isinstance(text, str) and text else default


def study_tables(store: Store, study: str) -> StudyTables:
    """Every table of one study, extracted from ``store``: trials, metrics, effects, verdicts, fidelity. A study
    with neither a harness_studies row nor trials is a UsageError (unknown name)."""
    row = store.study(study)
    frame, params = trials_with_params(store, study)
    if row is None and frame.empty:
        known = sorted(set(store.studies()["study_name"]) | set(store.trials()["study_name"]))
        hint = f" (known: {', '.join(known)})" if known else " (the database has no studies)"
        raise UsageError(f"no study named {study!r} in the database{hint}", subject="study")
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
