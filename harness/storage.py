"""Storage URLs: resolution order, validation before anything is created, and opening the store.

Order: ``--storage`` flag, then the study file's ``storage:``, then ``HARNESS_STORAGE``, then
``sqlite:///results/harness.db`` (relative to the working directory).
"""

from __future__ import annotations

import os
from pathlib import Path

from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, NoSuchModuleError

from harness.errors import UsageError
from harness.store import Store

DEFAULT_STORAGE = "sqlite:///results/harness.db"


def resolve_storage(flag: str | None = None, study_value: str | None = None) -> str:
    return flag or study_value or os.environ.get("HARNESS_STORAGE") or DEFAULT_STORAGE


def check_storage_url(url: str, where: str = "--storage") -> None:
    """Validate a URL without touching disk or network: parseable, a known dialect with its driver."""
    try:
        parsed = make_url(url)
        parsed.get_dialect()
    except (ArgumentError, ValueError) as err:
        raise UsageError(f"{where}: not a database URL: {url!r} ({err})") from None
    except NoSuchModuleError:
        raise UsageError(f"{where}: unknown database dialect in {url!r} (use sqlite:/// or postgresql://)") from None
    except ImportError as err:
        raise UsageError(f"{where}: the driver for {url!r} is not installed ({err})") from None
    if parsed.get_backend_name() == "sqlite":
        db = parsed.database
        if db and db != ":memory:":
            path = Path(db)
            if path.exists() and path.is_dir():
                raise UsageError(f"{where}: {db} is a directory, not a database file")


def sqlite_path(url: str) -> Path | None:
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite" and parsed.database and parsed.database != ":memory:":
        return Path(parsed.database)
    return None


def open_store(storage: str | None, create: bool = True) -> Store:
    """The Store at ``storage`` (resolved by ``resolve_storage``). With ``create=False`` a missing SQLite
    file is an error instead of being created (readers never create databases)."""
    url = resolve_storage(storage)
    check_storage_url(url)
    path = sqlite_path(url)
    if path is not None:
        if not create and not path.exists():
            raise UsageError(f"--storage: no database at {path} (run a study first)")
        if create:
            path.parent.mkdir(parents=True, exist_ok=True)
    store = Store(url)
    if create:
        store.ensure_schema()
    return store
