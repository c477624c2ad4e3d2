"""What optuna-dashboard (``optuna-dashboard sqlite:///results/harness.db``) shows of a study: the objectives by
their metric names (not "Objective 0"), the training loss of each trial as Optuna intermediate values (the
dashboard's learning curves; the dashboard labels their axis "Objective Value", but they are the training loss),
and the trial's other scalar metrics as user attributes (numbers only, 6 significant digits).

Optuna keeps intermediate values for single-objective studies only (``Trial.report``): a study with several
objectives gets the names and the attributes, and its curves stay in ``harness_metrics`` (and TensorBoard).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from typing import Any

import optuna

from harness.trial.events import TrialEvents, scalar_numbers

MAX_CURVE_POINTS = 1000  # intermediate values per trial: one database write each; a longer curve is thinned
ATTR_DIGITS = 6  # significant digits of a metric shown as a user attribute


def set_metric_names(study: optuna.Study, objectives: list[str]) -> None:
    """Name the study's objectives after their metrics, once (every worker would write the same)."""
    if study.metric_names == objectives:
        return
    with warnings.catch_warnings():  # set_metric_names is "experimental" in Optuna since 3.2
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        study.set_metric_names(objectives)


class OptunaEvents(TrialEvents):
    """Reports a trial's loss points as intermediate values (at most ``MAX_CURVE_POINTS``: every k-th point and
    the last) and, once it is complete, its scalar metrics but the objectives as user attributes. Points of an
    earlier attempt that the trial resumed from are reported from the stored curve at the end."""

    def __init__(self, trial: optuna.Trial, objectives: Sequence[str], steps: int, log_every: int):
        self.trial, self.objectives = trial, set(objectives)
        self.curves = len(trial.study.directions) == 1
        self.every = max(1, math.ceil(math.ceil(steps / log_every) / MAX_CURVE_POINTS))
        self.steps, self.log_every = steps, log_every
        self.reported: set[int] = set()

    def _kept(self, step: int) -> bool:
        return step == self.steps or (step // self.log_every) % self.every == 0

    def log(self, step: int, loss: float, images_per_s: float | None) -> None:
        if self.curves and step not in self.reported and self._kept(step):
            self.trial.report(loss, step)
            self.reported.add(step)

    def values(self, metrics: Sequence[dict[str, Any]], step: int) -> None:
        for m in metrics:  # curve points from before a resume
            if m["name"] == "train_loss" and m.get("step") is not None and m.get("value") is not None:
                self.log(int(m["step"]), float(m["value"]), None)
        for name, value in scalar_numbers(metrics).items():
            if name not in self.objectives:  # 6 significant digits: a short column (the database has every digit)
                self.trial.set_user_attr(name, float(f"{value:.{ATTR_DIGITS}g}"))
