"""Results as pandas: ``load(storage, study)`` gives one row per trial, one column per searched parameter
and per scalar metric. The report and ``python -m harness.query`` read through these same functions."""

from __future__ import annotations

import json

import pandas as pd

from harness.storage import open_store

TRIAL_COLUMNS = ["study_name", "trial_number", "state", "duration_s", "error", "started_at", "finished_at"]


def trials_with_params(store, study: str | None) -> tuple[pd.DataFrame, list[str]]:
    """Trial rows with one column per searched parameter; returns (frame, parameter column names)."""
    trials = store.trials(study)
    params = [json.loads(p) for p in trials["params_json"]] if len(trials) else []
    param_frame = pd.DataFrame(params, index=trials.index)
    names = list(param_frame.columns)
    frame = pd.concat([trials[TRIAL_COLUMNS], param_frame], axis=1)
    return frame, names


def scalar_metrics(store, study: str | None) -> pd.DataFrame:
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


def load(storage: str | None = None, study: str | None = None) -> pd.DataFrame:
    """One row per trial of ``study`` (all studies when None): state, timings, every searched parameter
    and every scalar metric (NaN where unavailable)."""
    store = open_store(storage, create=False)
    frame, _ = trials_with_params(store, study)
    metrics = scalar_metrics(store, study)
    out = frame.merge(metrics, on=["study_name", "trial_number"], how="left")
    return out.sort_values(["study_name", "trial_number"], ignore_index=True)


def curves(storage: str | None = None, study: str | None = None, name: str = "train_loss") -> pd.DataFrame:
    """Long frame of a stepped metric (e.g. the loss curve): study_name, trial_number, step, value."""
    store = open_store(storage, create=False)
    metrics = store.metrics(study)
    rows = metrics[(metrics["name"] == name) & metrics["step"].notna()]
    return rows[["study_name", "trial_number", "step", "value"]].sort_values(
        ["study_name", "trial_number", "step"], ignore_index=True
    )


def summary(storage: str | None, study: str) -> pd.DataFrame:
    """The effects table of ``study`` (``harness.summaries.EFFECT_COLUMNS``): per searched factor (the seed
    axis excluded), per level and objective: mean, std, n, 95% t interval, and the difference to the base
    level with its interval (paired t when seeds match, else Welch), and the verdict columns (relative
    difference, resolved, seeds per arm that would resolve it, best level, sentence). The report shows the
    same frame."""
    from harness.summaries import summarize  # summaries builds on this module

    return summarize(open_store(storage, create=False), study).effects


def verdicts(storage: str | None, study: str) -> pd.DataFrame:
    """The verdict of ``study`` (``harness.verdicts.SUMMARY_COLUMNS``), one row per factor and objective: the
    best level against the base, absolute and relative difference with its 95% interval, p, paired seeds,
    resolved or about how many seeds per arm would resolve it, and that as a sentence (``headline``)."""
    from harness.summaries import summarize  # summaries builds on this module

    return summarize(open_store(storage, create=False), study).verdicts()
