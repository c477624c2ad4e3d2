"""One SQL statement (``harness.query --sql``): read-only, bounded in time and rows, enforced by the database.

Layers, each enough on its own to keep the database unchanged:

1. ``single_statement`` splits the text like the database's tokenizer does (quotes, quoted identifiers,
   comments, PostgreSQL's dollar quotes and E-strings) and refuses anything but one statement.
2. The driver runs one statement only: Python's ``sqlite3`` refuses several; on PostgreSQL the statement runs
   in a server-side cursor (``DECLARE ... CURSOR FOR``: one query, sent with the extended protocol).
3. The database refuses writes. SQLite: the file is opened with ``mode=ro`` and ``PRAGMA query_only``, and an
   authorizer allows reading only (no writes, ATTACH, VACUUM INTO, transactions or setting pragmas).
   PostgreSQL: the session's ``default_transaction_read_only`` plus ``SET TRANSACTION READ ONLY``, made
   irreversible by a first query (read-write mode must be set before any query). The transaction is rolled
   back at the end, so even what PostgreSQL lets a read-only transaction do (``lo_create``) is undone.

Time (``sql_seconds``) and rows (``sql_rows``) are bounded by ``harness.limits``.
"""

from __future__ import annotations

import contextlib
import re
import sqlite3
import time
from pathlib import Path

from sqlalchemy.engine import make_url

from harness import limits
from harness.errors import UsageError, one_line
from harness.store.connect import connect_sqlite_read_only, database_errors, make_engine

_DOLLAR_TAG = re.compile(r"\$(?:[A-Za-z_][A-Za-z0-9_]*)?\$")


def _end_of_quoted(sql: str, i: int, close: str, backslash: bool) -> int:
    """Index just past the quoted text opened at ``i`` (a doubled closing quote is part of the text)."""
    i += 1
    while i < len(sql):
        if backslash and sql[i] == "\\":
            i += 2
            continue
        if sql[i] == close:
            if close != "]" and sql.startswith(close * 2, i):
                i += 2
                continue
            return i + 1
        i += 1
    return i


def _end_of_block_comment(sql: str, i: int, nested: bool) -> int:
    depth, i = 1, i + 2
    while i < len(sql) and depth:
        if sql.startswith("*/", i):
            depth, i = depth - 1, i + 2
        elif nested and sql.startswith("/*", i):
            depth, i = depth + 1, i + 2
        else:
            i += 1
    return i


def split_statements(sql: str, backend: str) -> list[str]:
    """The statements of ``sql`` (text between top-level semicolons that holds more than comments)."""
    pg = backend == "postgresql"
    statements, start, has_code, i = [], 0, False, 0
    while i < len(sql):
        c = sql[i]
        if c == ";":
            if has_code:
                statements.append(sql[start:i].strip())
            start, has_code, i = i + 1, False, i + 1
        elif sql.startswith("--", i):
            end = sql.find("\n", i)
            i = len(sql) if end < 0 else end + 1
        elif sql.startswith("/*", i):
            i = _end_of_block_comment(sql, i, nested=pg)
        elif c.isspace():
            i += 1
        else:
            has_code = True
            tag = _DOLLAR_TAG.match(sql, i) if pg and c == "$" else None
            word_before = i > 0 and (sql[i - 1].isalnum() or sql[i - 1] in "_$")
            if tag and not word_before:
                end = sql.find(tag.group(), tag.end())
                i = len(sql) if end < 0 else end + len(tag.group())
            elif c in "'\"" or (not pg and c in "`["):
                e_string = pg and c == "'" and i > 0 and sql[i - 1] in "eE" and not (i > 1 and sql[i - 2].isalnum())
                i = _end_of_quoted(sql, i, {"[": "]"}.get(c, c), backslash=e_string)
            else:
                i += 1
    if has_code:
        statements.append(sql[start:].strip())
    return statements


def single_statement(sql: str, backend: str) -> str:
    statements = split_statements(sql, backend)
    if not statements:
        raise UsageError("no SQL statement given", subject="sql")
    if len(statements) > 1:
        raise UsageError(f"one statement only, got {len(statements)} separated by ';'", subject="sql")
    return statements[0]


_SQLITE_READS = {sqlite3.SQLITE_SELECT, sqlite3.SQLITE_READ, sqlite3.SQLITE_FUNCTION, sqlite3.SQLITE_RECURSIVE}
_SQLITE_SCHEMA_PRAGMAS = {"table_info", "table_xinfo", "table_list", "index_list", "index_info", "foreign_key_list"}


def _sqlite_authorizer(action: int, arg1: str | None, arg2: str | None, db: str | None, trigger: str | None) -> int:
    """Reading only: SELECT, reading columns, functions, recursive CTEs, and pragmas that only report."""
    if action in _SQLITE_READS:
        return sqlite3.SQLITE_OK
    if action == sqlite3.SQLITE_PRAGMA and (arg2 is None or arg1 in _SQLITE_SCHEMA_PRAGMAS):
        return sqlite3.SQLITE_OK
    return sqlite3.SQLITE_DENY


def _limit_rows(rows: list[tuple], max_rows: int) -> list[tuple]:
    if len(rows) > max_rows:
        raise UsageError(
            f"more than {max_rows} rows ({limits.env_var('sql_rows')}); add a WHERE or LIMIT", subject="sql"
        )
    return rows


def _timed_out(seconds: int) -> UsageError:
    return UsageError(f"stopped after {seconds} s ({limits.env_var('sql_seconds')})", subject="sql")


def run_sqlite(path: Path, statement: str) -> tuple[list[str], list[tuple]]:
    seconds, max_rows = limits.limit("sql_seconds"), limits.limit("sql_rows")
    deadline = time.monotonic() + seconds
    conn = None
    try:
        conn = connect_sqlite_read_only(path.resolve())
        conn.set_authorizer(_sqlite_authorizer)
        conn.set_progress_handler(lambda: int(time.monotonic() > deadline), 10_000)
        cursor = conn.execute(statement)
        columns = [d[0] for d in cursor.description or []]
        return columns, _limit_rows(cursor.fetchmany(max_rows + 1), max_rows)
    except sqlite3.Error as err:
        if time.monotonic() > deadline:
            raise _timed_out(seconds) from None
        text = one_line(str(err))
        if "not authorized" in text or "authorization denied" in text:
            text = f"only reading is allowed ({text})"
        raise UsageError(text, subject="sql") from None
    finally:
        if conn is not None:
            conn.close()


def run_postgres(url: str, statement: str) -> tuple[list[str], list[tuple]]:
    import psycopg  # deferred: the optional PostgreSQL driver

    seconds, max_rows = limits.limit("sql_seconds"), limits.limit("sql_rows")
    engine = make_engine(url, read_only=True)
    with database_errors(url):
        raw = engine.raw_connection()
    try:
        conn = raw.driver_connection
        setup = conn.cursor()
        setup.execute("SET TRANSACTION READ ONLY")
        setup.execute(f"SET LOCAL statement_timeout = {int(seconds) * 1000}")
        setup.execute("SELECT 1")  # the first query: from here on the transaction cannot become read-write
        cursor = conn.cursor(name="harness_query")
        cursor.execute(statement)
        columns = [d.name for d in cursor.description or []]
        return columns, _limit_rows(cursor.fetchmany(max_rows + 1), max_rows)
    except psycopg.errors.QueryCanceled:
        raise _timed_out(seconds) from None
    except psycopg.Error as err:
        text = one_line(str(err).splitlines()[0] if str(err) else type(err).__name__)
        if isinstance(err, psycopg.errors.SyntaxError):  # DECLARE ... CURSOR FOR takes a query, nothing else
            text += " (on PostgreSQL the statement runs as one SELECT or VALUES query)"
        raise UsageError(text, subject="sql") from None
    finally:
        with contextlib.suppress(psycopg.Error):  # a lost connection has nothing to roll back
            raw.driver_connection.rollback()
        raw.close()
        engine.dispose()


def run_read_only(url: str, sql: str) -> tuple[list[str], list[tuple]]:
    """(column names, rows) of one read-only statement on the database at ``url`` (an existing database)."""
    parsed = make_url(url)
    backend = parsed.get_backend_name()
    if backend not in ("sqlite", "postgresql"):
        raise UsageError(f"read-only queries are enforced on SQLite and PostgreSQL only, not {backend}", subject="sql")
    statement = single_statement(sql, backend)
    if backend == "sqlite":
        return run_sqlite(Path(parsed.database), statement)
    return run_postgres(url, statement)
