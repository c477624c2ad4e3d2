"""The queue of grid cells: every cell without a complete, running or waiting trial is enqueued in Optuna
with its fixed parameters; cells of trials that Optuna retired (failed, pruned) may run again."""

from __future__ import annotations

import json
from typing import Any

import optuna
from optuna.trial import TrialState

from harness.config import LoadedStudy
from harness.config.space import cell_labels


def params_key(params: dict[str, Any]) -> str:
    return json.dumps(params, sort_keys=True, default=str)


def enqueue_missing(study: optuna.Study, loaded: LoadedStudy) -> tuple[int, int]:
    """Enqueue every grid cell without a complete (or running, or waiting) trial. Returns (missing, total)."""
    cells = loaded.planned_cells()
    taken = {
        params_key(t.params) for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.RUNNING))
    }
    waiting = {
        params_key(t.system_attrs.get("fixed_params", t.params))
        for t in study.get_trials(deepcopy=False, states=(TrialState.WAITING,))
    }
    missing = 0
    for cell in cells:
        labels = cell_labels(loaded.dims, cell)
        key = params_key(labels)
        if key in taken:
            continue
        missing += 1
        if key not in waiting:
            study.enqueue_trial(labels)
    return missing, len(cells)


def retired_trials(study: optuna.Study) -> set[int]:
    """Numbers of the trials Optuna ended without completing them: their grid cells may run again."""
    return {t.number for t in study.get_trials(deepcopy=False, states=(TrialState.FAIL, TrialState.PRUNED))}
