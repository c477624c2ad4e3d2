"""The errors the harness raises for bad input and for trials that cannot finish.

A ``UsageError`` is one line that names the file and the key path. Where the library cannot know how the
caller named an input (a storage URL given to ``harness.results.load``, a study name), the error carries a
``subject`` (``storage``, ``study``) and reads ``storage: ...``; a command line shows its own flag there
(``--storage: ...``, ``harness.cli.common``).
"""

from __future__ import annotations

from collections.abc import Mapping


class UsageError(ValueError):
    """Bad user input: a study file, a flag, a dataset path, a storage URL. The message is one line that
    names the file and the key path, or starts with the ``subject`` it is about."""

    def __init__(self, message: str, *, subject: str | None = None):
        self.subject, self.detail = subject, message
        super().__init__(f"{subject}: {message}" if subject else message)

    def named(self, names: Mapping[str, str]) -> str:
        """The message with its subject shown as the caller names it (``{"storage": "--storage"}``)."""
        if self.subject in names:
            return f"{names[self.subject]}: {self.detail}"
        return str(self)


class TrialFailed(RuntimeError):
    """A trial could not finish (diverged, crashed); the runner records the reason and the study goes on."""


class Diverged(TrialFailed):
    pass


def one_line(message: str) -> str:
    return " ".join(str(message).split())
