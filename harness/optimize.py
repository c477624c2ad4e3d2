"""Optuna integration: samplers, resume, stale-trial recovery, and the objective that runs one trial and
writes its results to the harness tables."""

from __future__ import annotations

import json
import socket
import time
import traceback
import warnings
from typing import Any

import optuna
from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback
from optuna.trial import TrialState
from sqlalchemy.exc import IntegrityError, ProgrammingError

from harness.environment import environment, pid_alive
from harness.errors import TrialFailed, UsageError, one_line
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


def open_study(loaded: LoadedStudy, storage_url: str) -> optuna.Study:
    storage = None
    for attempt in range(5):  # workers starting at once on a fresh database race to create Optuna's tables
        try:
            with warnings.catch_warnings():  # heartbeats are "experimental" in Optuna, and exactly what we need
                warnings.simplefilter("ignore")
                storage = RDBStorage(
                    storage_url,
                    heartbeat_interval=60,
                    grace_period=180,
                    heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(max_retry=3),
                )
            break
        except (IntegrityError, ProgrammingError):
            if attempt == 4:
                raise
            time.sleep(0.5 * (attempt + 1))
    directions = [o.direction for o in loaded.spec.objectives]
    try:
        return optuna.create_study(
            study_name=loaded.name,
            storage=storage,
            sampler=make_sampler(loaded),
            directions=directions,
            load_if_exists=True,
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


HEARTBEAT_FAILED = (
    "failed by Optuna: its worker stopped sending heartbeats (the process or its machine died, or lost the "
    "database); the trial is retried"
)


def sync_heartbeat_failures(study: optuna.Study, store: Store, name: str) -> int:
    """Trials that Optuna failed for missed heartbeats (another worker's stale-trial check) are still
    "running" in the harness tables: mark them failed with the reason. Returns how many."""
    running = store.running_trials(name)
    synced = 0
    for trial in study.get_trials(deepcopy=False, states=(TrialState.FAIL,)):
        if trial.number in running:
            store.finish_trial(name, trial.number, "failed", HEARTBEAT_FAILED)
            synced += 1
    return synced


def recover_stale(study: optuna.Study, store: Store, loaded: LoadedStudy) -> int:
    """Trials left RUNNING by a process of this host that no longer exists (killed, crashed) become
    failed; for tpe/random their parameters are enqueued again (the grid re-enqueues missing cells).
    Trials Optuna already failed for missed heartbeats are marked failed in the harness tables too."""
    sync_heartbeat_failures(study, store, loaded.name)
    host = socket.gethostname()
    rows = store.trials(loaded.name).set_index("trial_number")
    recovered = 0
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if trial.number not in rows.index:
            continue
        env = json.loads(rows.loc[trial.number, "env_json"] or "{}")
        if env.get("host") != host or pid_alive(int(env.get("pid", -1))):
            continue
        study._storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)
        store.finish_trial(loaded.name, trial.number, "failed", "interrupted: the process running it ended")
        if loaded.spec.search.sampler != "grid":
            study.enqueue_trial(trial.params, skip_if_exists=True)
        recovered += 1
    return recovered


def enqueue_missing(study: optuna.Study, loaded: LoadedStudy) -> tuple[int, int]:
    """Enqueue every grid cell without a complete (or running, or waiting) trial. Returns (missing, total)."""
    cells = planned_trials(loaded)
    taken = {
        params_key(t.params) for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.RUNNING))
    }
    waiting = {
        params_key(t.system_attrs.get("fixed_params", {}))
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


def skip_duplicate(trial: optuna.Trial, labels: dict[str, Any]) -> None:
    """With several workers a grid cell can be enqueued twice. A trial is pruned when the same cell is
    complete, or running in a trial that started first (ties by number): exactly one of them runs."""
    me = trial.study._storage.get_trial(trial._trial_id)
    mine = (me.datetime_start, trial.number)
    for other in trial.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.RUNNING)):
        if other.number == trial.number or params_key(other.params) != params_key(labels):
            continue
        if other.state == TrialState.COMPLETE or (other.datetime_start, other.number) < mine:
            raise optuna.TrialPruned(f"duplicate of trial {other.number} (another worker runs or ran this cell)")


def make_objective(loaded: LoadedStudy, store: Store, storage: str, progress: bool, log: list[str]):
    objectives = [o.metric for o in loaded.spec.objectives]
    root = results_dir(storage) / slug(loaded.name)

    def objective(trial: optuna.Trial):
        sync_heartbeat_failures(trial.study, store, loaded.name)  # Optuna fails stale trials just before
        grid = loaded.spec.search.sampler == "grid"
        labels = {d.key: d.suggest(trial, grid=grid) for d in loaded.dims}
        values = {d.key: d.decode(labels[d.key]) for d in loaded.dims}
        if loaded.spec.search.sampler == "grid":
            skip_duplicate(trial, labels)
        config = loaded.trial_config(values)
        device = pick_device(config["train"]["device"])
        store.start_trial(loaded.name, trial.number, labels, config, environment(device))
        workdir = root / f"config_{config_hash(config)}"
        trial.set_user_attr("workdir", str(workdir))
        shown = ", ".join(f"{k}={v}" for k, v in labels.items())
        print(f"trial {trial.number}: {shown or '(base configuration)'}", flush=True)
        t0 = time.perf_counter()
        try:
            result = run_trial(config, workdir, cache_dir(), progress=progress)
            store.add_metrics(loaded.name, trial.number, result.metrics)
            for kind, path in result.artifacts:
                store.add_artifact(loaded.name, trial.number, kind, path)
            scalar = {m["name"]: m.get("value") for m in result.metrics if m.get("step") is None}
            out = []
            for name in objectives:
                if scalar.get(name) is None:
                    raise TrialFailed(f"objective {name!r} has no value (see its metric row for the reason)")
                out.append(float(scalar[name]))
        except BaseException as err:
            reason = f"{type(err).__name__}: {one_line(str(err))}" if str(err) else type(err).__name__
            if isinstance(err, KeyboardInterrupt):
                reason = "interrupted (Ctrl-C); rerun the study to resume from the checkpoint"
            elif not isinstance(err, TrialFailed):
                reason += " | " + one_line(traceback.format_exc(limit=-2))[-600:]
            store.finish_trial(loaded.name, trial.number, "failed", reason, time.perf_counter() - t0)
            trial.set_user_attr("error", reason)
            print(f"trial {trial.number}: failed: {reason[:300]}", flush=True)
            log.append(f"trial {trial.number} failed")
            raise
        store.finish_trial(loaded.name, trial.number, "complete", None, time.perf_counter() - t0)
        summary = ", ".join(f"{n}={v:.4g}" for n, v in zip(objectives, out, strict=True))
        resumed = f" (resumed from step {result.resumed_from})" if result.resumed_from else ""
        print(f"trial {trial.number}: complete in {time.perf_counter() - t0:.1f}s{resumed}: {summary}", flush=True)
        log.append(f"trial {trial.number} complete")
        return out[0] if len(out) == 1 else tuple(out)

    return objective


def run_study(loaded: LoadedStudy, storage: str, n_trials: int | None, progress: bool = True) -> str:
    """Run what is missing of the study; returns a one-paragraph summary."""
    store = open_store(storage)
    spec = loaded.spec
    study = open_study(loaded, storage)
    check_space_unchanged(study, loaded)
    print_notes(loaded)
    store.record_study(
        loaded.name,
        str(loaded.path),
        loaded.base,
        spec.search.model_dump(mode="json"),
        [o.model_dump() for o in spec.objectives],
    )
    recover_stale(study, store, loaded)
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
    study.optimize(
        make_objective(loaded, store, storage, progress, log),
        n_trials=todo,
        catch=(Exception,),
        gc_after_trial=True,
    )
    states = [t.state for t in study.get_trials(deepcopy=False)]
    complete = sum(s == TrialState.COMPLETE for s in states)
    failed = sum(1 for line in log if line.endswith("failed"))
    return (
        f"study {loaded.name!r}: {complete} complete trials in the database ({failed} failed in this run); "
        f"storage {storage}; report: python -m harness.report --study {loaded.name!r}"
    )
