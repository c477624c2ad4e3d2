"""Many workers on one database: SQLite writers that serialise, and schema creation that survives a race.

SQLite has no row locks: two processes that read a row and then update it (Optuna popping a WAITING trial,
the harness claiming a grid cell) both succeed. A writer engine therefore opens every transaction with
``BEGIN IMMEDIATE``, which takes the database's write lock before the first read, so read-then-write is
atomic; waiting for the lock is bounded by a busy timeout instead of failing at once with "database is
locked". PostgreSQL needs neither: Optuna and the harness lock rows (``SELECT ... FOR UPDATE``).

Readers (reports, queries) keep ordinary engines: an immediate transaction needs write access.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from typing import Any, TypeVar

from sqlalchemy import create_engine, event
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError, OperationalError, ProgrammingError

from harness.store.urls import is_sqlite, sqlite_path

BUSY_TIMEOUT_S = 30  # how long a SQLite writer waits for the write lock before "database is locked"

T = TypeVar("T")


def writer_engine_kwargs(url: str) -> dict[str, Any]:
    """Engine arguments of a writer: SQLite waits ``BUSY_TIMEOUT_S`` for the write lock."""
    return {"connect_args": {"timeout": BUSY_TIMEOUT_S}} if is_sqlite(url) else {}


def serialise_sqlite_writes(engine: Engine) -> Engine:
    """Make every transaction of a SQLite ``engine`` start with ``BEGIN IMMEDIATE`` (SQLAlchemy's recipe
    for pysqlite: the driver's own implicit BEGIN is switched off). Connections already pooled are dropped
    so that every later one gets it. Other databases (and SQLite in memory) are returned unchanged."""
    if sqlite_path(engine.url.render_as_string(hide_password=False)) is None:
        return engine

    @event.listens_for(engine, "connect")
    def _no_implicit_begin(dbapi_connection, _record) -> None:
        dbapi_connection.isolation_level = None

    @event.listens_for(engine, "begin")
    def _begin_immediate(connection) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE")

    engine.dispose()
    return engine


def writer_engine(url: str) -> Engine:
    """An engine for a process that writes the study: serialised on SQLite, ordinary elsewhere."""
    return serialise_sqlite_writes(create_engine(url, **writer_engine_kwargs(url)))


def is_creation_race(err: Exception) -> bool:
    """Errors of two workers creating the same tables at once: a table, type or row that another worker
    created between our check and our write, or SQLite's write lock held by the other worker. Optuna wraps
    some of them (``StorageInternalError``): the cause is looked at too."""
    if err.__cause__ is not None and isinstance(err.__cause__, Exception) and is_creation_race(err.__cause__):
        return True
    if isinstance(err, IntegrityError | ProgrammingError):
        return True
    text = str(err).lower()
    return isinstance(err, OperationalError) and ("already exists" in text or "database is locked" in text)


def retry_creation_race(create: Callable[[], T], attempts: int = 8) -> T:
    """Run ``create`` (idempotent schema creation), again after a short random pause when it lost a race
    with another worker; other errors and the last attempt's error propagate."""
    for attempt in range(attempts):
        try:
            return create()
        except Exception as err:  # noqa: BLE001 - filtered right below
            if attempt == attempts - 1 or not is_creation_race(err):
                raise
            time.sleep(random.uniform(0.05, 0.3) * (attempt + 1))
    raise AssertionError("unreachable")
