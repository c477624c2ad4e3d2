"""Storage URLs: where the database is, checked before anything is created.

Order: the ``storage`` given by the caller (``--storage``), then the study file's ``storage:``, then
``HARNESS_STORAGE``, then ``sqlite:///results/harness.db`` (relative to the working directory). An
in-memory SQLite database is refused: its results would vanish with the process.

Errors are ``UsageError``s about the subject ``storage`` (a command line names its flag there) unless the
caller says where the URL came from (``where``: ``s.yaml: storage``, ``$HARNESS_STORAGE``).
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, NoSuchModuleError

from harness.errors import UsageError

DEFAULT_STORAGE = "sqlite:///results/harness.db"


def resolve_storage(given: str | None = None, study_value: str | None = None) -> str:
    """The storage URL to use: ``given`` (a flag or argument), the study's, ``$HARNESS_STORAGE``, the default."""
    if given is not None and not given.strip():
        raise UsageError("empty; give a database URL such as sqlite:///results/harness.db", subject="storage")
    return given or study_value or os.environ.get("HARNESS_STORAGE") or DEFAULT_STORAGE


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


def sqlite_path(url: str) -> Path | None:
    """The database file of a SQLite URL on a file; None for other databases and SQLite in memory."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite" and not in_memory(parsed):
        return sqlite_file(parsed)
    return None


def is_sqlite(url: str) -> bool:
    return make_url(url).get_backend_name() == "sqlite"


def check_storage_url(url: str, where: str | None = None) -> None:
    """Validate a URL without touching the database: parseable, a known dialect whose driver is installed,
    SQLite on a file (an in-memory database would vanish with the process) that, if present, is a regular
    file. ``where``: where the URL came from, for the message (default: the subject ``storage``)."""

    def bad(message: str) -> UsageError:
        return UsageError(f"{where}: {message}") if where else UsageError(message, subject="storage")

    try:
        parsed = make_url(url)
        dialect = parsed.get_dialect()
    except (ArgumentError, ValueError):
        raise bad(f"not a database URL: {url!r} (use sqlite:///PATH or postgresql://...)") from None
    except NoSuchModuleError:
        raise bad(f"unknown database dialect in {url!r} (use sqlite:/// or postgresql://)") from None
    try:
        dialect.import_dbapi()
    except ImportError as err:
        raise bad(f"the driver for {shown(parsed)} is not installed ({err})") from None
    if parsed.get_backend_name() == "sqlite":
        if in_memory(parsed):
            raise bad(
                f"{url!r} is an in-memory database, gone when the process ends; give a file, "
                "e.g. sqlite:///results/harness.db"
            )
        path = sqlite_file(parsed)
        try:
            mode = path.stat().st_mode
        except FileNotFoundError:
            return
        except OSError as err:
            raise bad(f"cannot open {path}: {err.strerror or err}") from None
        if stat.S_ISDIR(mode):
            raise bad(f"{path} is a directory, not a database file")
        if not stat.S_ISREG(mode):
            raise bad(f"{path} is not a regular file (a pipe, socket or device)")
