"""Optuna integration: samplers, the storage, the queue of grid cells, and the objective that runs one
trial and writes its results to the harness tables (bookkeeping: ``harness.claims``; dead workers' trials:
``harness.recovery``)."""

from __future__ import annotations

import json
import time
import traceback
import warnings
from pathlib import Path
from typing import Any

import optuna
from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback
from optuna.trial import FrozenTrial, TrialState

from harness import faults
from harness.claims import ClaimLost, claim_trial, complete_trial, grid_cell, own_cell
from harness.concurrency import (
    GRACE_FACTOR,
    heartbeat_interval,
    is_sqlite_file,
    retry_creation_race,
    serialise_sqlite_writes,
    writer_engine,
    writer_engine_kwargs,
)
from harness.environment import environment
from harness.errors import TrialFailed, UsageError, one_line
from harness.recovery import recover
from harness.runner import config_hash, pick_device, run_trial
from harness.space import cell_labels
from harness.storage import open_store
from harness.store import Store
from harness.study import cache_dir, planned_trials, print_notes, results_dir, slug
from harness.studyfile import LoadedStudy


def make_sampler(loaded: LoadedStudy) -> optuna.samplers.BaseSampler:
    search, seed = loaded.spec.search, loaded.spec.seed
    if search.sampler == "grid":
        # every cell is enqueued with fixed parameters (see ``enqueue_missing``), so the sampler never
        # chooses; Optuna's GridSampler would pick cells itself and repeat failed ones within one run
        return optuna.samplers.RandomSampler(seed=seed)
    if search.sampler == "tpe":
        return optuna.samplers.TPESampler(seed=seed)
    return optuna.samplers.RandomSampler(seed=seed)


def open_rdb_storage(storage_url: str, interval: int) -> RDBStorage:
    """Optuna's storage with heartbeats (a trial is stale after ``GRACE_FACTOR`` missed ones). Workers
    starting at once on a fresh database race to create Optuna's tables: a lost race is retried. On
    SQLite its transactions then take the write lock at BEGIN, so that two workers never pop the same
    waiting trial (``harness.concurrency``)."""

    def create() -> RDBStorage:
        with warnings.catch_warnings():  # heartbeats are "experimental" in Optuna, and exactly what we need
            warnings.simplefilter("ignore")
            return RDBStorage(
                storage_url,
                engine_kwargs=writer_engine_kwargs(storage_url),
                heartbeat_interval=interval,
                grace_period=GRACE_FACTOR * interval,
                heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(max_retry=3),
            )

    storage = retry_creation_race(create)
    serialise_sqlite_writes(storage.engine)
    return storage


def open_study(loaded: LoadedStudy, storage: RDBStorage) -> optuna.Study:
    directions = [o.direction for o in loaded.spec.objectives]
    try:
        return retry_creation_race(
            lambda: optuna.create_study(
                study_name=loaded.name,
                storage=storage,
                sampler=make_sampler(loaded),
                directions=directions,
                load_if_exists=True,
            )
        )
    except ValueError as err:
        raise UsageError(f"{loaded.path}: objectives: {one_line(str(err))}") from None


def params_key(params: dict[str, Any]) -> str:
    return json.dumps(params, sort_keys=True, default=str)


def check_space_unchanged(study: optuna.Study, loaded: LoadedStudy) -> None:
    """Optuna cannot change an axis' kind or a categorical's values within a study: say so before running."""
    grid = loaded.spec.search.sampler == "grid"
    for trial in study.get_trials(deepcopy=False):
        for dim in loaded.dims:
            old = trial.distributions.get(dim.key)
            if old is None:
                continue
            try:
                optuna.distributions.check_distribution_compatibility(old, dim.distribution(grid))
            except ValueError:
                raise UsageError(
                    f"{loaded.path}: search.space.{dim.key}: differs from what study {loaded.name!r} stored "
                    f"({optuna.distributions.distribution_to_json(old)}); Optuna cannot change it within a "
                    "study: use a new study name (--set name=...)"
                ) from None


def enqueue_missing(study: optuna.Study, loaded: LoadedStudy) -> tuple[int, int]:
    """Enqueue every grid cell without a complete (or running, or waiting) trial. Returns (missing, total)."""
    cells = planned_trials(loaded)
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


def failure_reason(err: BaseException) -> str:
    reason = f"{type(err).__name__}: {one_line(str(err))}" if str(err) else type(err).__name__
    if isinstance(err, KeyboardInterrupt):
        return "interrupted (Ctrl-C); rerun the study to resume from the checkpoint"
    if not isinstance(err, TrialFailed | ClaimLost):
        reason += " | " + one_line(traceback.format_exc(limit=-2))[-600:]
    return reason


def make_objective(loaded: LoadedStudy, store: Store, root: Path, progress: bool, log: list[str]):
    """The function Optuna calls per trial: claim the cell (with the ``running`` row), train and evaluate,
    then write metrics, artifacts and ``complete`` in one transaction (``harness.claims``)."""
    objectives = [o.metric for o in loaded.spec.objectives]
    grid = loaded.spec.search.sampler == "grid"

    def objective(trial: optuna.Trial):
        faults.point("before_claim", trial=trial.number)
        labels = {d.key: d.suggest(trial, grid=grid) for d in loaded.dims}
        values = {d.key: d.decode(labels[d.key]) for d in loaded.dims}
        context = {"trial": trial.number, "cell": faults.cell_text(labels)}
        config = loaded.trial_config(values)
        device = pick_device(config["train"]["device"])
        cell = grid_cell(labels) if grid else own_cell(trial.number)
        retired = retired_trials(trial.study)
        holder = claim_trial(store, loaded.name, cell, trial.number, labels, config, environment(device), retired)
        if holder is not None:
            raise optuna.TrialPruned(f"duplicate of trial {holder} (another worker runs or ran this cell)")
        faults.point("after_claim", **context)
        workdir = root / f"config_{config_hash(config)}"
        trial.set_user_attr("workdir", str(workdir))
        shown = ", ".join(f"{k}={v}" for k, v in labels.items())
        print(f"trial {trial.number}: {shown or '(base configuration)'}", flush=True)
        t0 = time.perf_counter()
        try:
            result = run_trial(config, workdir, cache_dir(), progress=progress)
            scalar = {m["name"]: m.get("value") for m in result.metrics if m.get("step") is None}
            missing = [name for name in objectives if scalar.get(name) is None]
            if missing:
                store.add_metrics(loaded.name, trial.number, result.metrics)  # they say why it is missing
                raise TrialFailed(f"objective {missing[0]!r} has no value (see its metric row for the reason)")
            out = [float(scalar[name]) for name in objectives]
            duration = time.perf_counter() - t0
            complete_trial(store, loaded.name, trial.number, cell, result.metrics, result.artifacts, duration)
        except BaseException as err:
            reason = failure_reason(err)
            store.finish_trial(loaded.name, trial.number, "failed", reason, time.perf_counter() - t0)
            trial.set_user_attr("error", reason)
            print(f"trial {trial.number}: failed: {reason[:300]}", flush=True)
            log.append(f"trial {trial.number} failed")
            raise
        faults.point("before_tell", **context)
        summary = ", ".join(f"{n}={v:.4g}" for n, v in zip(objectives, out, strict=True))
        resumed = f" (resumed from step {result.resumed_from})" if result.resumed_from else ""
        print(f"trial {trial.number}: complete in {duration:.1f}s{resumed}: {summary}", flush=True)
        log.append(f"trial {trial.number} complete")
        return out[0] if len(out) == 1 else tuple(out)

    return objective


def make_housekeeping(loaded: LoadedStudy, storage: RDBStorage, store: Store, budget: int):
    """Called by Optuna after every trial, just before its own stale-trial check of the next one: end the
    trials of dead workers; for a grid, stop once ``budget`` trials ran or no cell waits in the queue. A
    duplicate (a cell queued twice, skipped) does not count: it only takes a stale entry off the queue."""
    objectives = [o.metric for o in loaded.spec.objectives]
    grid = loaded.spec.search.sampler == "grid"
    ran = 0

    def housekeeping(study: optuna.Study, trial: FrozenTrial) -> None:
        nonlocal ran
        recover(study, storage, store, loaded.name, objectives, requeue=not grid)
        ran += trial.state != TrialState.PRUNED
        if grid and (ran >= budget or not study.get_trials(deepcopy=False, states=(TrialState.WAITING,))):
            study.stop()

    return housekeeping


def open_writer_store(storage: str) -> Store:
    """The study's store: checked and created by ``open_store``, then written through a writer engine."""
    checked = open_store(storage)
    if not is_sqlite_file(checked.url):
        return checked
    checked.engine.dispose()
    return Store(checked.url, engine=writer_engine(checked.url))


def run_study(loaded: LoadedStudy, storage: str, n_trials: int | None, progress: bool = True) -> str:
    """Run what is missing of the study; returns a one-paragraph summary."""
    interval = heartbeat_interval()  # a bad $HARNESS_HEARTBEAT_S stops us before the database is touched
    store = open_writer_store(storage)
    spec = loaded.spec
    rdb = open_rdb_storage(storage, interval)
    study = open_study(loaded, rdb)
    check_space_unchanged(study, loaded)
    print_notes(loaded)
    store.record_study(
        loaded.name,
        str(loaded.path),
        loaded.base,
        spec.search.model_dump(mode="json"),
        [o.model_dump() for o in spec.objectives],
    )
    objectives = [o.metric for o in spec.objectives]
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
        return f"study {loaded.name!r}: nothing to run ({total} trials planned, all complete)"
    print(f"study {loaded.name!r}: running {todo} of {total} trials", flush=True)
    log: list[str] = []
    root = results_dir(storage) / slug(loaded.name) / store.study_uid(loaded.name)
    study.optimize(
        make_objective(loaded, store, root, progress, log),
        n_trials=None if spec.search.sampler == "grid" else todo,  # a grid stops in its housekeeping
        catch=(Exception,),
        callbacks=[make_housekeeping(loaded, rdb, store, todo)],
        gc_after_trial=True,
    )
    states = [t.state for t in study.get_trials(deepcopy=False)]
    complete = sum(s == TrialState.COMPLETE for s in states)
    failed = sum(1 for line in log if line.endswith("failed"))
    return (
        f"study {loaded.name!r}: {complete} complete trials in the database ({failed} failed in this run); "
        f"storage {storage}; report: python -m harness.report --study {loaded.name!r}"
    )
