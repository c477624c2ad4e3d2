"""Errors the command-line entry points turn into one line on stderr and exit code 2."""

from __future__ import annotations

import sys
from collections.abc import Callable
from functools import wraps

from sqlalchemy.exc import SQLAlchemyError

from harness.safe_text import terminal_safe


class UsageError(ValueError):
    """Bad user input: a study file, a flag, a dataset path, a storage URL. The message is one line that
    names the file and the key path."""


class TrialFailed(RuntimeError):
    """A trial could not finish (diverged, crashed); the runner records the reason and the study goes on."""


class Diverged(TrialFailed):
    pass


def one_line(message: str) -> str:
    return " ".join(str(message).split())


def cli_main(main: Callable[[list[str] | None], int]) -> Callable[[list[str] | None], int]:
    """Wrap a CLI main: UsageError -> ``error: ...`` on stderr and exit 2, no traceback. A database error
    that no entry point foresaw (``harness.storage`` names the storage of those it does) is one line too."""

    @wraps(main)
    def wrapper(argv: list[str] | None = None) -> int:
        try:
            return main(argv)
        except UsageError as err:
            message = one_line(str(err))
        except Exception as err:  # a database error, also wrapped by Optuna (StorageInternalError)
            db_error = err if isinstance(err, SQLAlchemyError) else err.__cause__
            if not isinstance(db_error, SQLAlchemyError):
                raise
            cause = getattr(db_error, "orig", None) or db_error
            message = f"database: {type(cause).__name__}: {one_line(str(cause).splitlines()[0] if str(cause) else '')}"
        print(f"error: {terminal_safe(message)}", file=sys.stderr)
        return 2

    return wrapper
