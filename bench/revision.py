"""A earlier revision of this repository in a temporary folder, for benches that print before/after figures.

``with checkout("6ecfae0") as tree: ...`` runs ``git archive`` of that revision into a temporary folder; a command
started there with ``cwd=tree`` (and ``PYTHONPATH=tree``) imports that revision's ``harness`` and ``components``
instead of this checkout's (the current directory comes first on ``sys.path`` under ``python -m``).
"""

from __future__ import annotations

import contextlib
import io
import subprocess
import tarfile
import tempfile
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


@contextlib.contextmanager
def checkout(rev: str) -> Iterator[Path]:
    """The tracked files of ``rev`` in a temporary folder, removed on exit."""
    archive = subprocess.run(["git", "archive", "--format=tar", rev], cwd=ROOT, capture_output=True, check=True)
    with tempfile.TemporaryDirectory(prefix=f"harness-{rev[:12]}-") as tmp:
        with tarfile.open(fileobj=io.BytesIO(archive.stdout)) as tar:
            tar.extractall(tmp, filter="data")
        yield Path(tmp)


def describe(rev: str) -> str:
    """``rev`` as a short hash and subject line."""
    out = subprocess.run(["git", "log", "-1", "--format=%h %s", rev], cwd=ROOT, capture_output=True, text=True)
    return out.stdout.strip()[:100] or rev
