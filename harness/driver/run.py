"""Run what is missing of a study: open it, recover the trials of dead workers, enqueue the grid's missing
cells, and let Optuna call the objective (``harness.driver.objective``) until the budget or the queue is spent.
Artifacts go beside a SQLite database (``results_dir``), in a folder per study identity of that database.
What the run prints (phases, progress, the summary) is ``harness.driver.console`` and ``progress``."""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path

import optuna
from optuna.storages import RDBStorage
from optuna.trial import FrozenTrial, TrialState

from harness.config import LoadedStudy
from harness.driver.console import Console
from harness.driver.dashboard import set_metric_names
from harness.driver.objective import View, make_objective
from harness.driver.open import check_space_unchanged, open_rdb_storage, open_study, open_writer_store
from harness.driver.progress import StudyProgress
from harness.driver.queue import enqueue_missing
from harness.driver.recovery import heartbeat_interval, recover
from harness.paths import slug
from harness.store.tables import Store
from harness.store.urls import sqlite_path
from harness.trial.parallel import Parallel
from harness.trial.tensorboard import tensorboard_available

TENSORBOARD_MISSING = (
    "note: --tensorboard: the tensorboard package is not installed (pip install tensorboard, or the project's "
    "[tensorboard] extra); no event files are written"
)


@dataclass(frozen=True)
class RunOutcome:
    summary: str  # the closing paragraph
    exit_code: int  # 0, or EXIT_ALL_FAILED when every trial of the run failed (harness.driver.progress)
    failure: str | None = None  # one line when the run failed as a whole


def results_dir(storage: str) -> Path:
    """Artifacts go beside a SQLite database, else under ./results (or $HARNESS_RESULTS_DIR)."""
    if os.environ.get("HARNESS_RESULTS_DIR"):
        return Path(os.environ["HARNESS_RESULTS_DIR"])
    path = sqlite_path(storage)
    return path.parent if path is not None else Path("results")


def make_housekeeping(loaded: LoadedStudy, storage: RDBStorage, store: Store, budget: int, parallel: Parallel):
    """Called by Optuna after every trial, just before its own stale-trial check of the next one: end the
    trials of dead workers; for a grid, stop once ``budget`` trials ran or no cell waits in the queue. A
    duplicate (a cell queued twice, skipped) does not count: it only takes a stale entry off the queue.
    Under torchrun, stop when the ranks fell out of step (``Parallel.broken``): the job cannot go on."""
    objectives = [o.metric for o in loaded.spec.objectives]
    grid = loaded.spec.search.sampler == "grid"
    ran = 0

    def housekeeping(study: optuna.Study, trial: FrozenTrial) -> None:
        nonlocal ran
        recover(study, storage, store, loaded.name, objectives, requeue=not grid)
        ran += trial.state != TrialState.PRUNED
        if parallel.broken:
            study.stop()
        if grid and (ran >= budget or not study.get_trials(deepcopy=False, states=(TrialState.WAITING,))):
            study.stop()

    return housekeeping


def make_counter(progress: StudyProgress, console: Console):
    """Called by Optuna after every trial of this run: count it as Optuna ended it. A trial Optuna failed after
    the objective returned (the objective prints its own failures) is printed here."""

    def count(study: optuna.Study, trial: FrozenTrial) -> None:
        progress.finished(trial)
        if trial.state == TrialState.FAIL and "error" not in trial.user_attrs:
            console.line(progress.failures[-1].replace(": ", ": failed: ", 1), essential=True)

    return count


def run_study(
    loaded: LoadedStudy,
    storage: str,
    n_trials: int | None,
    console: Console | None = None,
    tensorboard: bool = False,
    parallel: Parallel | None = None,
) -> RunOutcome:
    """Run what is missing of the study, printing through ``console``; ``tensorboard``: event files per trial.
    Returns the summary and the exit status (``EXIT_ALL_FAILED`` when every trial of this run failed).
    ``parallel``: rank 0 of a torchrun job, whose other ranks train every trial with it
    (``harness.trial.parallel``)."""
    parallel = parallel or Parallel()
    interval = heartbeat_interval()  # a bad $HARNESS_HEARTBEAT_S stops us before the database is touched
    console = console or Console()
    store = open_writer_store(storage)
    spec = loaded.spec
    rdb = open_rdb_storage(storage, interval)
    study = open_study(loaded, rdb)
    check_space_unchanged(study, loaded)
    objectives = [o.metric for o in spec.objectives]
    set_metric_names(study, objectives)  # optuna-dashboard shows the metrics' names, not "Objective 0"
    for note in loaded.notes:  # warnings found while validating, now that the study is known to run
        print(f"note: {note}", file=sys.stderr)
    store.record_study(
        loaded.name,
        str(loaded.path),
        loaded.base.to_json(),
        spec.search.model_dump(mode="json"),
        [o.model_dump() for o in spec.objectives],
    )
    recover(study, rdb, store, loaded.name, objectives, requeue=spec.search.sampler != "grid")
    if spec.search.sampler == "grid":
        missing, total = enqueue_missing(study, loaded)
        todo = missing
    else:
        total = spec.search.n_trials or 0
        done = len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))
        todo = max(0, total - done)
    if n_trials is not None:
        todo = min(todo, n_trials)
    if todo == 0:
        return RunOutcome(f"study {loaded.name!r}: nothing to run ({total} trials planned, all complete)", 0)
    if tensorboard and not tensorboard_available():
        print(TENSORBOARD_MISSING, file=sys.stderr)
        tensorboard = False
    console.line(f"study {loaded.name!r}: running {todo} of {total} trials", essential=True)
    progress = StudyProgress(loaded.name, planned=total, todo=todo)
    root = results_dir(storage) / slug(loaded.name) / store.study_uid(loaded.name)
    study.optimize(
        make_objective(loaded, store, root, View(console, progress, tensorboard), parallel),
        n_trials=None if spec.search.sampler == "grid" else todo,  # a grid stops in its housekeeping
        catch=(Exception,),
        callbacks=[make_counter(progress, console), make_housekeeping(loaded, rdb, store, todo, parallel)],
        gc_after_trial=True,
    )
    complete = len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))
    summary = (
        f"study {loaded.name!r}: this run {progress.counts_text()}; {complete} of {total} planned trials complete "
        f"in the database; storage {storage}; report: python -m harness.report --study {loaded.name!r}"
    )
    failure = None
    if progress.all_failed:
        first = progress.failures[0].split(" | ")[0][:300]  # the reason, without its traceback's tail
        failure = f"study {loaded.name!r}: every trial of this run failed ({progress.failed}); the first: {first}"
    return RunOutcome(summary, progress.exit_code, failure)
