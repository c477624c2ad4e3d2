"""What every command line shares: bad input is one line on stderr and exit code 2, never a traceback."""

from __future__ import annotations

import sys
from collections.abc import Callable
from functools import wraps

from sqlalchemy.exc import SQLAlchemyError

from harness.errors import UsageError, one_line
from harness.safe_text import terminal_safe

# how the command lines name the inputs the library's errors are about (``UsageError.subject``)
FLAGS = {"storage": "--storage", "study": "--study", "sql": "--sql", "out": "--out"}


def cli_main(main: Callable[[list[str] | None], int]) -> Callable[[list[str] | None], int]:
    """Wrap a CLI main: UsageError -> ``error: ...`` on stderr (its subject named by its flag) and exit 2, no
    traceback. A database error that no entry point foresaw (``harness.store.connect`` names the storage of
    those it does) is one line too."""

    @wraps(main)
    def wrapper(argv: list[str] | None = None) -> int:
        try:
            return main(argv)
        except UsageError as err:
            message = one_line(err.named(FLAGS))
        except Exception as err:  # a database error, also wrapped by Optuna (StorageInternalError)
            db_error = err if isinstance(err, SQLAlchemyError) else err.__cause__
            if not isinstance(db_error, SQLAlchemyError):
                raise
            cause = getattr(db_error, "orig", None) or db_error
            message = f"database: {type(cause).__name__}: {one_line(str(cause).splitlines()[0] if str(cause) else '')}"
        print(f"error: {terminal_safe(message)}", file=sys.stderr)
        return 2

    return wrapper
