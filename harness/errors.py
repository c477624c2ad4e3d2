"""Errors the command-line entry points turn into one line on stderr and exit code 2."""

from __future__ import annotations

import sys
from collections.abc import Callable
from functools import wraps


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
    """Wrap a CLI main: UsageError -> ``error: ...`` on stderr and exit 2, no traceback."""

    @wraps(main)
    def wrapper(argv: list[str] | None = None) -> int:
        try:
            return main(argv)
        except UsageError as err:
            print(f"error: {one_line(str(err))}", file=sys.stderr)
            return 2

    return wrapper
