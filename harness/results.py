"""Results as pandas, from Python or a notebook (the twin of ``python -m harness.query``). Every function opens
the database read-only; ``storage`` is a database URL (default: ``$HARNESS_STORAGE``, else
``sqlite:///results/harness.db``).

- ``load(storage, study)``: one row per trial, one column per searched parameter and per scalar metric;
- ``curves(storage, study, name)``: a stepped metric (the loss curve) as a long frame;
- ``summary(storage, study)``: the effects table, with its verdict columns;
- ``verdicts(storage, study)``: one row per factor and objective.
"""

from __future__ import annotations

import pandas as pd

from harness.report.frames import TRIAL_COLUMNS, curve_frame, trial_frame
from harness.report.tables import study_tables
from harness.store.connect import open_store

# TRIAL_COLUMNS: the columns of ``load`` before the parameters and metrics
__all__ = ["TRIAL_COLUMNS", "curves", "load", "summary", "verdicts"]


def load(storage: str | None = None, study: str | None = None) -> pd.DataFrame:
    """One row per trial of ``study`` (all studies when None): state, timings, every searched parameter
    and every scalar metric (NaN where unavailable)."""
    return trial_frame(open_store(storage, create=False), study)


def curves(storage: str | None = None, study: str | None = None, name: str = "train_loss") -> pd.DataFrame:
    """Long frame of a stepped metric (e.g. the loss curve): study_name, trial_number, step, value."""
    return curve_frame(open_store(storage, create=False), study, name)


def summary(storage: str | None, study: str) -> pd.DataFrame:
    """The effects table of ``study`` (``harness.report.effects.EFFECT_COLUMNS``): per searched factor (the
    seed axis excluded), per level and objective: mean, std, n, 95% t interval, and the difference to the base
    level with its interval (paired t when seeds match, else Welch), and the verdict columns (relative
    difference, resolved, seeds per arm that would resolve it, best level, sentence). The report shows the
    same frame."""
    return study_tables(open_store(storage, create=False), study).effects


def verdicts(storage: str | None, study: str) -> pd.DataFrame:
    """The verdict of ``study`` (``harness.report.verdicts.SUMMARY_COLUMNS``), one row per factor and
    objective: the best level against the base, absolute and relative difference with its 95% interval, p,
    paired seeds, resolved or about how many seeds per arm would resolve it, and that as a sentence
    (``headline``)."""
    return study_tables(open_store(storage, create=False), study).verdicts()
