"""The objective Optuna calls per trial: claim the grid cell (with the trial's ``running`` row), run the trial
(``harness.trial``), write its metrics, artifacts and ``complete`` in one transaction; a failure is recorded
with its reason and the study goes on.

Every failure is visible, wherever it is raised (building the trial's config, claiming its cell, training,
evaluating, writing the results): the console prints ``trial N: failed: <reason>``, the trial's row in
``harness_trials`` says ``failed`` with the reason (a trial that failed before its claim gets its row then),
Optuna's trial carries it as the user attribute ``error``, and the run's summary counts it.
"""

from __future__ import annotations

import math
import os
import socket
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna

from harness import faults
from harness.config import LoadedStudy
from harness.driver.console import Console
from harness.driver.dashboard import OptunaEvents
from harness.driver.progress import StudyProgress
from harness.driver.queue import retired_trials
from harness.driver.search import suggest
from harness.environment import environment
from harness.errors import TrialFailed, one_line
from harness.paths import cache_dir, slug
from harness.store.claims import ClaimLost, claim_trial, complete_trial, grid_cell, own_cell, record_unclaimed_failure
from harness.store.tables import Store
from harness.trial.events import Fanout, TrialEvents
from harness.trial.parallel import Parallel
from harness.trial.runner import config_hash, pick_device, run_trial
from harness.trial.tensorboard import EVENTS_FOLDER, TensorBoardEvents


@dataclass
class View:
    """What a run shows besides the database: the console, the study's progress, TensorBoard event files."""

    console: Console
    progress: StudyProgress
    tensorboard: bool = False


@dataclass
class Attempt:
    """What is known of a trial so far, for the record of its failure."""

    labels: dict[str, Any] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)
    env: dict[str, Any] = field(default_factory=dict)
    claimed: bool = False


def failure_reason(err: BaseException) -> str:
    reason = f"{type(err).__name__}: {one_line(str(err))}" if str(err) else type(err).__name__
    if isinstance(err, KeyboardInterrupt):
        return "interrupted (Ctrl-C); rerun the study to resume from the checkpoint"
    if not isinstance(err, TrialFailed | ClaimLost):
        reason += " | " + one_line(traceback.format_exc(limit=-2))[-600:]
    return reason


def record_failure(
    store: Store, study: str, trial: optuna.Trial, attempt: Attempt, reason: str, duration_s: float
) -> str:
    """Write the failure to the harness tables and to Optuna's trial; returns a note when the database would
    not take it (the failure is printed all the same)."""
    try:
        if attempt.claimed:
            store.finish_trial(study, trial.number, "failed", reason, duration_s)
        else:
            env = attempt.env or {"host": socket.gethostname(), "pid": os.getpid()}
            record_unclaimed_failure(
                store, study, trial.number, attempt.labels, attempt.config, env, reason, duration_s
            )
        trial.set_user_attr("error", reason)
    except Exception as err:
        return f" (not recorded in the database: {type(err).__name__}: {one_line(str(err))[:200]})"
    return ""


def make_objective(loaded: LoadedStudy, store: Store, root: Path, view: View, parallel: Parallel | None = None):
    """The function Optuna calls per trial: claim the cell (with the ``running`` row), train and evaluate,
    then write metrics, artifacts and ``complete`` in one transaction (``harness.store.claims``). Under
    torchrun (``parallel``, rank 0) the claimed trial is sent to the other ranks, which train it too."""
    parallel = parallel or Parallel()
    objectives = [o.metric for o in loaded.spec.objectives]
    grid = loaded.spec.search.sampler == "grid"
    say = view.console.line

    def watchers(trial: optuna.Trial, config, workdir: Path, shown: str) -> TrialEvents:
        found: list[TrialEvents] = [
            view.console.trial(trial.number),
            OptunaEvents(trial, objectives, config.train.steps, config.train.log_every),
        ]
        if view.tensorboard:
            logdir = workdir / EVENTS_FOLDER / slug(shown)
            found.append(TensorBoardEvents(logdir, f"trial {trial.number}: {shown}"))
        return Fanout(*found)

    def objective(trial: optuna.Trial):
        faults.point("before_claim", trial=trial.number)
        attempt, t0 = Attempt(), time.perf_counter()
        try:
            attempt.labels = {d.key: suggest(d, trial, grid=grid) for d in loaded.dims}
            labels = attempt.labels
            values = {d.key: d.decode(labels[d.key]) for d in loaded.dims}
            context = {"trial": trial.number, "cell": faults.cell_text(labels)}
            config = loaded.trial_config(values)
            attempt.config = config.to_json()  # the resolved config as the database keeps it
            device = pick_device(config.train.device)
            attempt.env = environment(device)
            cell = grid_cell(labels) if grid else own_cell(trial.number)
            retired = retired_trials(trial.study)
            holder = claim_trial(store, loaded.name, cell, trial.number, labels, attempt.config, attempt.env, retired)
            if holder is not None:
                raise optuna.TrialPruned(f"duplicate of trial {holder} (another worker runs or ran this cell)")
            attempt.claimed = True
            faults.point("after_claim", **context)
            counts = store.state_counts(loaded.name)
            say(view.progress.line(counts.get("complete", 0), counts.get("running", 0)))
            workdir = root / f"config_{config_hash(config)}"
            trial.set_user_attr("workdir", str(workdir))
            shown = ", ".join(f"{k}={v}" for k, v in labels.items())
            say(f"trial {trial.number}: {shown or '(base configuration)'}", essential=True)
            events = watchers(trial, config, workdir, context["cell"] or "base")
            try:
                if parallel.distributed:  # the other ranks build the same config from the same cell values
                    parallel.send(("trial", values, str(workdir), config_hash(config)))
                result = run_trial(config, workdir, cache_dir(), events, parallel)
                scalar = {m["name"]: m.get("value") for m in result.metrics if m.get("step") is None}
                missing = [name for name in objectives if not _finite(scalar.get(name))]
                if missing:
                    store.add_metrics(loaded.name, trial.number, result.metrics)  # they say why it is missing
                    raise TrialFailed(f"objective {missing[0]!r} has no value (see its metric row for the reason)")
                out = [float(scalar[name]) for name in objectives]
                duration = time.perf_counter() - t0
                complete_trial(store, loaded.name, trial.number, cell, result.metrics, result.artifacts, duration)
                _without_failing(say, trial.number, lambda: events.values(result.metrics, config.train.steps))
            finally:
                _without_failing(say, trial.number, events.close)
        except optuna.TrialPruned as skip:
            say(f"trial {trial.number}: skipped: {skip}", essential=True)
            raise
        except BaseException as err:
            reason = failure_reason(err)
            note = record_failure(store, loaded.name, trial, attempt, reason, time.perf_counter() - t0)
            shown = reason.split(" | ")[0][:300]  # the traceback's tail is in the database and the report
            say(f"trial {trial.number}: failed: {shown}{note}", essential=True)
            raise
        faults.point("before_tell", **context)
        summary = ", ".join(f"{n}={v:.4g}" for n, v in zip(objectives, out, strict=True))
        resumed = f" (resumed from step {result.resumed_from})" if result.resumed_from else ""
        say(f"trial {trial.number}: complete in {duration:.1f}s{resumed}: {summary}", essential=True)
        return out[0] if len(out) == 1 else tuple(out)

    return objective


def _finite(value: Any) -> bool:
    """A number Optuna can take as an objective value (Optuna fails a trial that returns NaN)."""
    return isinstance(value, int | float) and math.isfinite(value)


def _without_failing(say, number: int, call) -> None:
    """Run a watcher's call whose failure must not change the trial's outcome (a full disk under TensorBoard's
    files, the dashboard's attributes): print it as a note instead."""
    try:
        call()
    except Exception as err:
        say(f"trial {number}: note: a progress view failed: {type(err).__name__}: {one_line(str(err))[:200]}", True)
