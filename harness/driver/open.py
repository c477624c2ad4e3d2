"""Opening a study for running: Optuna's storage (with heartbeats), the Optuna study, the harness's store
through a writer engine, and the check that the search space still fits what the study stored."""

from __future__ import annotations

import warnings

import optuna
from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback

from harness.config import LoadedStudy
from harness.driver.recovery import GRACE_FACTOR
from harness.driver.search import distribution, make_sampler
from harness.errors import UsageError, one_line
from harness.store.concurrency import retry_creation_race, serialise_sqlite_writes, writer_engine, writer_engine_kwargs
from harness.store.connect import open_store
from harness.store.tables import Store
from harness.store.urls import sqlite_path


def open_rdb_storage(storage_url: str, interval: int) -> RDBStorage:
    """Optuna's storage with heartbeats (a trial is stale after ``GRACE_FACTOR`` missed ones). Workers
    starting at once on a fresh database race to create Optuna's tables: a lost race is retried. On
    SQLite its transactions then take the write lock at BEGIN, so that two workers never pop the same
    waiting trial (``harness.store.concurrency``)."""

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
                sampler=make_sampler(loaded.spec.search, loaded.spec.seed),
                directions=directions,
                load_if_exists=True,
            )
        )
    except ValueError as err:
        raise UsageError(f"{loaded.path}: objectives: {one_line(str(err))}") from None


def check_space_unchanged(study: optuna.Study, loaded: LoadedStudy) -> None:
    """Optuna cannot change an axis' kind or a categorical's values within a study: say so before running."""
    grid = loaded.spec.search.sampler == "grid"
    for trial in study.get_trials(deepcopy=False):
        for dim in loaded.dims:
            old = trial.distributions.get(dim.key)
            if old is None:
                continue
            try:
                optuna.distributions.check_distribution_compatibility(old, distribution(dim, grid))
            except ValueError:
                raise UsageError(
                    f"{loaded.path}: search.space.{dim.key}: differs from what study {loaded.name!r} stored "
                    f"({optuna.distributions.distribution_to_json(old)}); Optuna cannot change it within a "
                    "study: use a new study name (--set name=...)"
                ) from None


def open_writer_store(storage: str) -> Store:
    """The study's store: checked and created by ``open_store``, then written through a writer engine."""
    checked = open_store(storage)
    if sqlite_path(checked.url) is None:
        return checked
    checked.engine.dispose()
    return Store(checked.url, engine=writer_engine(checked.url))
