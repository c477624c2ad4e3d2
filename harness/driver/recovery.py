"""Trials whose worker died: found, ended in Optuna and in the harness tables, their cells run again.

A worker can die at any instant of a trial. What it leaves behind, and what becomes of it here:

- harness row ``complete``, Optuna trial still RUNNING (killed between the two commits): the trial is
  complete; Optuna is told so with the objective values from the stored metrics, once its worker is
  gone (a dead process of this host, or the row older than half the heartbeat grace period).
- harness row ``running`` (or ``failed``), worker a dead process of this host: failed at once.
- no harness row at all (killed between Optuna's RUNNING and the claim): nothing says whose it is, so it
  is failed once older than the grace period without a heartbeat; with a heartbeat Optuna's own
  stale-trial check fails it after the same grace period.
- Optuna's stale-trial check (``fail_stale_trials``) runs every time, also when nothing is left to run,
  and harness rows of trials it failed are marked failed: ``interrupted`` when the worker was a process of
  this host that has ended (the same reason as above, whichever check came first), else the heartbeat's.

Grid cells of failed trials are queued again by the caller; tpe/random trials are re-queued here.
Heartbeats: every ``HARNESS_HEARTBEAT_S`` seconds (``heartbeat_interval``); stale after ``GRACE_FACTOR`` missed.
"""

from __future__ import annotations

import json
import os
import socket
import warnings
from datetime import UTC, datetime, timedelta
from typing import Any

import optuna
from optuna.storages import RDBStorage
from optuna.trial import FrozenTrial, TrialState
from sqlalchemy import select

from harness.environment import pid_alive
from harness.errors import UsageError
from harness.store.tables import Store

HEARTBEAT_FAILED = (
    "failed by Optuna: its worker stopped sending heartbeats (the process or its machine died, or lost the "
    "database); the trial is retried"
)
INTERRUPTED = "interrupted: the process running it ended"
HEARTBEAT_S = 60  # Optuna's heartbeat interval; a trial is stale after GRACE_FACTOR missed intervals
GRACE_FACTOR = 3


def heartbeat_interval() -> int:
    """Seconds between a running trial's heartbeats (``HARNESS_HEARTBEAT_S``, default 60). A trial whose
    worker missed ``GRACE_FACTOR`` of them is stale: failed and retried by the next worker that looks."""
    raw = os.environ.get("HARNESS_HEARTBEAT_S")
    if raw is None:
        return HEARTBEAT_S
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if value < 1:
        raise UsageError(f"HARNESS_HEARTBEAT_S: must be a positive whole number of seconds, got {raw!r}")
    return value


def worker_died_here(env: dict[str, Any], host: str) -> bool:
    """The trial's worker was a process of this host that no longer exists."""
    return env.get("host") == host and not pid_alive(int(env.get("pid", -1)))


def sync_heartbeat_failures(study: optuna.Study, store: Store, name: str) -> int:
    """Trials that Optuna failed for missed heartbeats (another worker's stale-trial check) are still
    "running" in the harness tables: mark them failed with the reason (``INTERRUPTED`` when their worker was
    a process of this host that has ended, whichever check saw it first). Returns how many."""
    running = store.running_trials(name)
    if not running:
        return 0
    envs = store.trials(name).set_index("trial_number")["env_json"]
    host, synced = socket.gethostname(), 0
    for trial in study.get_trials(deepcopy=False, states=(TrialState.FAIL,)):
        if trial.number in running:
            dead = worker_died_here(json.loads(envs.get(trial.number) or "{}"), host)
            store.finish_trial(name, trial.number, "failed", INTERRUPTED if dead else HEARTBEAT_FAILED)
            synced += 1
    return synced


def trials_with_heartbeat(storage: RDBStorage, trial_ids: list[int]) -> set[int]:
    """Which of these trials ever recorded a heartbeat. Optuna has no public call for it, so its table is
    read; should its model move, every trial counts as beating (Optuna's own check then handles it)."""
    if not trial_ids:
        return set()
    try:
        from optuna.storages._rdb.models import TrialHeartbeatModel  # private: guarded by the except below
    except ImportError:
        return set(trial_ids)
    query = select(TrialHeartbeatModel.trial_id).where(TrialHeartbeatModel.trial_id.in_(trial_ids))
    with storage.engine.connect() as conn:
        return set(conn.execute(query).scalars())


def _age_s(moment: Any, now_utc: datetime) -> float:
    """Seconds since a stored UTC timestamp (SQLite gives it back without a time zone)."""
    if moment is None or moment != moment:  # None or NaT
        return 0.0
    moment = moment.to_pydatetime() if hasattr(moment, "to_pydatetime") else moment
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return (now_utc - moment).total_seconds()


def _objective_values(store: Store, name: str, number: int, objectives: list[str]) -> list[float] | None:
    metrics = store.metrics(name)
    rows = metrics[(metrics["trial_number"] == number) & metrics["step"].isna()].set_index("name")["value"]
    values = [rows.get(metric) for metric in objectives]
    if any(v is None or v != v for v in values):
        return None
    return [float(v) for v in values]


def _tell(study: optuna.Study, trial: FrozenTrial, **kwargs: Any) -> bool:
    """End a trial in Optuna; False when another worker ended it first."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            study.tell(trial.number, **kwargs)
    except (ValueError, optuna.exceptions.UpdateFinishedTrialError):
        return False
    return True


def recover(
    study: optuna.Study, storage: RDBStorage, store: Store, name: str, objectives: list[str], requeue: bool
) -> int:
    """End the trials of dead workers (see the module docstring); returns how many this call ended.
    ``storage``: the study's Optuna storage; ``requeue``: enqueue the parameters of failed trials again
    (tpe/random; the grid re-queues missing cells itself)."""
    grace_s = storage.grace_period
    rows = store.trials(name).set_index("trial_number")
    running = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
    beating = trials_with_heartbeat(storage, [t._trial_id for t in running])
    host, now_utc, now_local = socket.gethostname(), datetime.now(UTC), datetime.now()
    completed, failed = 0, []
    for trial in running:
        if trial.number not in rows.index:  # killed before its claim: nobody knows whose it is
            started = trial.datetime_start or now_local
            if trial._trial_id not in beating and now_local - started > timedelta(seconds=grace_s):
                if _tell(study, trial, state=TrialState.FAIL):
                    failed.append(trial)
            continue
        row = rows.loc[trial.number]
        env = json.loads(row["env_json"] or "{}")
        dead = worker_died_here(env, host)
        if row["state"] == "complete":  # killed between the harness's commit and Optuna's
            if dead or _age_s(row["finished_at"], now_utc) > grace_s / 2:
                values = _objective_values(store, name, trial.number, objectives)
                outcome = {"values": values} if values else {"state": TrialState.FAIL}
                completed += _tell(study, trial, **outcome)
        elif dead and _tell(study, trial, state=TrialState.FAIL):
            store.finish_trial(name, trial.number, "failed", INTERRUPTED)
            failed.append(trial)
    with warnings.catch_warnings():  # heartbeats are "experimental" in Optuna
        warnings.simplefilter("ignore")
        optuna.storages.fail_stale_trials(study)
    sync_heartbeat_failures(study, store, name)
    if requeue:
        for trial in failed:
            if trial.params:
                study.enqueue_trial(trial.params, skip_if_exists=True)
    return completed + len(failed)
