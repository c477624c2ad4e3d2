"""Opening the store: read-write for the study that owns the database, read-only for every reader. Database
errors become one line naming the storage.

Readers (``harness.report``, ``harness.query``, ``harness.results``) never create or change a database:
SQLite is opened with ``mode=ro`` and ``PRAGMA query_only``, PostgreSQL sessions with
``default_transaction_read_only``. A server that does not answer fails after ``connect_seconds``
(``harness.limits``); a database written by another harness schema version is refused.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import quote

from sqlalchemy import create_engine, inspect, select, update
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import SQLAlchemyError

from harness import limits
from harness.errors import UsageError, one_line
from harness.store.concurrency import BUSY_TIMEOUT_S
from harness.store.tables import SCHEMA_VERSION, SchemaMismatch, Store, schema_table
from harness.store.urls import check_storage_url, resolve_storage, shown, sqlite_file, sqlite_path


def make_engine(url: str, read_only: bool) -> Engine:
    """An engine with connect timeouts; ``read_only``: through the database's own read-only mechanisms."""
    parsed = make_url(url)
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        path = sqlite_file(parsed).resolve()
        if not read_only:
            return create_engine(url, connect_args={"timeout": BUSY_TIMEOUT_S})
        return create_engine(url, creator=lambda: connect_sqlite_read_only(path))
    if backend == "postgresql":
        args: dict = {"connect_timeout": limits.limit("connect_seconds")}
        if read_only:
            options = parsed.query.get("options", "")
            args["options"] = f"{options} -c default_transaction_read_only=on".strip()
        return create_engine(url, connect_args=args)
    return create_engine(url)


def connect_sqlite_read_only(path: Path) -> sqlite3.Connection:
    """A SQLite connection that can neither create nor change the file (``mode=ro``, ``query_only``)."""
    conn = sqlite3.connect(f"file:{quote(str(path))}?mode=ro", uri=True, timeout=BUSY_TIMEOUT_S)
    conn.execute("PRAGMA query_only = ON")
    return conn


@contextmanager
def database_errors(url: str) -> Iterator[None]:
    """Turn a database error (refused or timed-out connection, corrupt or read-only file) into a one-line
    UsageError naming the storage."""
    try:
        yield
    except SQLAlchemyError as err:
        cause = getattr(err, "orig", None) or err
        text = one_line(str(cause).split("\n")[0] or type(cause).__name__)
        raise UsageError(f"storage {shown(url)}: {type(cause).__name__}: {text}") from None


def schema_version(engine: Engine) -> int | None:
    """The harness schema version stored in the database; None when it has no harness tables yet."""
    if not inspect(engine).has_table(schema_table.name):
        return None
    with engine.connect() as conn:
        return conn.execute(select(schema_table.c.version)).scalar()


def check_schema_version(url: str, engine: Engine, writer: bool) -> None:
    """Refuse a database written by a newer harness (its tables may mean something else). An older one is
    refused to readers; a writer leaves it to ``Store.ensure_schema`` (which upgrades it or refuses)."""
    version = schema_version(engine)
    if version is None or version == SCHEMA_VERSION or (writer and version < SCHEMA_VERSION):
        return
    hint = "upgrade the harness to read it" if version > SCHEMA_VERSION else "it predates this harness"
    raise UsageError(
        f"storage {shown(url)}: written by harness schema version {version}, this harness knows version "
        f"{SCHEMA_VERSION}; {hint}"
    )


def check_writable(engine: Engine) -> None:
    """A write that changes nothing, rolled back: fails at once on a read-only file, server or replica."""
    with engine.connect() as conn, conn.begin() as transaction:
        conn.execute(update(schema_table).where(schema_table.c.id == 1).values(version=schema_table.c.version))
        transaction.rollback()


def open_store(storage: str | None, create: bool = True) -> Store:
    """The Store at ``storage`` (resolved by ``resolve_storage``). ``create=True`` (the study): read-write,
    the harness tables created when missing. ``create=False`` (readers): read-only, and a missing database
    is an error instead of being created."""
    url = resolve_storage(storage)
    check_storage_url(url)
    path = sqlite_path(url)
    if path is not None:
        if not create and not path.exists():
            raise UsageError(f"no database at {path} (run a study first)", subject="storage")
        if create:
            path.parent.mkdir(parents=True, exist_ok=True)
    with database_errors(url):
        store = Store(url, make_engine(url, read_only=not create))
        check_schema_version(url, store.engine, writer=create)
        if create:
            try:
                store.ensure_schema()
            except SchemaMismatch as err:  # another worker created it with another version meanwhile
                raise UsageError(f"storage {shown(url)}: {err}") from None
            check_writable(store.engine)
    return store
