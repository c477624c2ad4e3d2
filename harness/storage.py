"""Storage URLs: resolution order, validation before anything is created, and opening the store: read-write
for the study that owns the database, read-only for every reader. Database errors become one line.

Order: ``--storage`` flag, then the study file's ``storage:``, then ``HARNESS_STORAGE``, then
``sqlite:///results/harness.db`` (relative to the working directory).

Readers (``harness.report``, ``harness.query``, ``harness.results``) never create or change a database:
SQLite is opened with ``mode=ro`` and ``PRAGMA query_only``, PostgreSQL sessions with
``default_transaction_read_only``. A server that does not answer fails after ``connect_seconds``
(``harness.limits``); a database written by another harness schema version is refused.
"""

from __future__ import annotations

import os
import sqlite3
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import quote

from sqlalchemy import create_engine, inspect, select, update
from sqlalchemy.engine import URL, Engine, make_url
from sqlalchemy.exc import ArgumentError, NoSuchModuleError, SQLAlchemyError

from harness import limits
from harness.errors import UsageError, one_line
from harness.store import SCHEMA_VERSION, SchemaMismatch, Store, schema_table

DEFAULT_STORAGE = "sqlite:///results/harness.db"
SQLITE_BUSY_TIMEOUT_S = 30  # how long a SQLite connection waits for another process's write lock


def resolve_storage(flag: str | None = None, study_value: str | None = None) -> str:
    if flag is not None and not flag.strip():
        raise UsageError("--storage: empty; give a database URL such as sqlite:///results/harness.db")
    return flag or study_value or os.environ.get("HARNESS_STORAGE") or DEFAULT_STORAGE


def shown(url: str | URL) -> str:
    """The URL with its password hidden, for messages."""
    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError):
        return repr(url)
    return str(url) if parsed.password is None else parsed.render_as_string(hide_password=True)


def in_memory(parsed: URL) -> bool:
    db = parsed.database or ""
    return db in ("", ":memory:") or db.startswith("file::memory:") or parsed.query.get("mode") == "memory"


def sqlite_file(parsed: URL) -> Path:
    """The file of a SQLite URL, also in SQLite's URI form (``sqlite:///file:PATH?mode=ro&uri=true``)."""
    db = parsed.database or ""
    if parsed.query.get("uri") in ("true", "1") and db.startswith("file:"):
        return Path(db[len("file:") :].split("?")[0])
    return Path(db)


def check_storage_url(url: str, where: str = "--storage") -> None:
    """Validate a URL without touching the database: parseable, a known dialect whose driver is installed,
    SQLite on a file (an in-memory database would vanish with the process) that, if present, is a regular
    file."""
    try:
        parsed = make_url(url)
        dialect = parsed.get_dialect()
    except (ArgumentError, ValueError):
        raise UsageError(f"{where}: not a database URL: {url!r} (use sqlite:///PATH or postgresql://...)") from None
    except NoSuchModuleError:
        raise UsageError(f"{where}: unknown database dialect in {url!r} (use sqlite:/// or postgresql://)") from None
    try:
        dialect.import_dbapi()
    except ImportError as err:
        raise UsageError(f"{where}: the driver for {shown(parsed)} is not installed ({err})") from None
    if parsed.get_backend_name() == "sqlite":
        if in_memory(parsed):
            raise UsageError(
                f"{where}: {url!r} is an in-memory database, gone when the process ends; give a file, "
                "e.g. sqlite:///results/harness.db"
            )
        path = sqlite_file(parsed)
        try:
            mode = path.stat().st_mode
        except FileNotFoundError:
            return
        except OSError as err:
            raise UsageError(f"{where}: cannot open {path}: {err.strerror or err}") from None
        if stat.S_ISDIR(mode):
            raise UsageError(f"{where}: {path} is a directory, not a database file")
        if not stat.S_ISREG(mode):
            raise UsageError(f"{where}: {path} is not a regular file (a pipe, socket or device)")


def sqlite_path(url: str) -> Path | None:
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite" and not in_memory(parsed):
        return sqlite_file(parsed)
    return None


def make_engine(url: str, read_only: bool) -> Engine:
    """An engine with connect timeouts; ``read_only``: through the database's own read-only mechanisms."""
    parsed = make_url(url)
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        path = sqlite_file(parsed).resolve()
        if not read_only:
            return create_engine(url, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_S})
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
    conn = sqlite3.connect(f"file:{quote(str(path))}?mode=ro", uri=True, timeout=SQLITE_BUSY_TIMEOUT_S)
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
            raise UsageError(f"--storage: no database at {path} (run a study first)")
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
