"""A study's rows as pandas frames: trials with one column per searched parameter, and the scalar metrics
as one column per metric. Everything that reads results (``harness.results``, the report, ``harness.query``)
builds on these."""

from __future__ import annotations

import json

import pandas as pd

from harness.store.tables import Store

TRIAL_COLUMNS = ["study_name", "trial_number", "state", "duration_s", "error", "started_at", "finished_at"]


def trials_with_params(store: Store, study: str | None) -> tuple[pd.DataFrame, list[str]]:
    """Trial rows with one column per searched parameter; returns (frame, parameter column names)."""
    trials = store.trials(study)
    params = [json.loads(p) for p in trials["params_json"]] if len(trials) else []
    param_frame = pd.DataFrame(params, index=trials.index)
    names = list(param_frame.columns)
    frame = pd.concat([trials[TRIAL_COLUMNS], param_frame], axis=1)
    return frame, names


def scalar_metrics(store: Store, study: str | None) -> pd.DataFrame:
    """[study_name, trial_number] x metric name, from rows without a step (curves are left out)."""
    metrics = store.metrics(study)
    scalar = metrics[metrics["step"].isna()]
    if scalar.empty:
        return pd.DataFrame(columns=["study_name", "trial_number"])
    wide = scalar.pivot_table(
        index=["study_name", "trial_number"], columns="name", values="value", aggfunc="last", dropna=False
    )
    wide.columns.name = None
    return wide.reset_index()


def trial_frame(store: Store, study: str | None) -> pd.DataFrame:
    """One row per trial of ``study`` (all studies when None): state, timings, every searched parameter and
    every scalar metric (NaN where unavailable)."""
    frame, _ = trials_with_params(store, study)
    out = frame.merge(scalar_metrics(store, study), on=["study_name", "trial_number"], how="left")
    return out.sort_values(["study_name", "trial_number"], ignore_index=True)


def curve_frame(store: Store, study: str | None, name: str) -> pd.DataFrame:
    """Long frame of a stepped metric (e.g. the loss curve): study_name, trial_number, step, value."""
    metrics = store.metrics(study)
    rows = metrics[(metrics["name"] == name) & metrics["step"].notna()]
    return rows[["study_name", "trial_number", "step", "value"]].sort_values(
        ["study_name", "trial_number", "step"], ignore_index=True
    )
