"""Reading a study file: a regular UTF-8 file within its size limit, parsed as YAML with the harness's rules
(``harness.config.yamlio``: ``1e-5`` is a number, ``yes`` stays a string, aliases are budgeted)."""

from __future__ import annotations

import stat
from pathlib import Path
from typing import Any

import yaml

from harness import limits
from harness.config.yamlio import TooLarge, loads
from harness.errors import UsageError


def read_text_file(path: Path, max_bytes: int) -> str:
    """The text of a regular file of at most ``max_bytes`` bytes (a FIFO, a device such as /dev/zero or a
    symlink loop is an error, never read)."""
    try:
        st = path.stat()
    except FileNotFoundError:
        raise UsageError(f"{path}: no such file") from None
    except OSError as err:
        raise UsageError(f"{path}: cannot open: {err.strerror or err}") from None
    if stat.S_ISDIR(st.st_mode):
        raise UsageError(f"{path}: is a directory, not a study file")
    if not stat.S_ISREG(st.st_mode):
        raise UsageError(f"{path}: not a regular file (a pipe, socket or device); give a study file")
    try:
        with open(path, "rb") as f:
            data = f.read(max_bytes + 1)
    except OSError as err:
        raise UsageError(f"{path}: cannot read: {err.strerror or err}") from None
    if len(data) > max_bytes:
        raise limits.exceeded("study_file_bytes", len(data), f"{path}: file size (bytes, at least)")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise UsageError(f"{path}: not a text file (UTF-8)") from None


def parse_yaml(text: str, where: str) -> Any:
    """YAML with the harness's rules (``harness.config.yamlio``) and its size limit; errors name ``where``."""
    try:
        return loads(text, max_nodes=limits.limit("yaml_nodes"))
    except TooLarge as err:
        raise UsageError(f"{where}: {err} ({limits.env_var('yaml_nodes')})") from None
    except RecursionError:
        raise UsageError(f"{where}: malformed YAML: nested too deeply") from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        place = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = getattr(err, "problem", None) or str(err)
        raise UsageError(f"{where}: malformed YAML: {place}{problem}") from None


def read_yaml(path: Path) -> dict[str, Any]:
    data = parse_yaml(read_text_file(path, limits.limit("study_file_bytes")), str(path))
    if data is None:
        raise UsageError(f"{path}: empty study file")
    if not isinstance(data, dict):
        raise UsageError(f"{path}: a study file is a mapping of keys, got {type(data).__name__}")
    return data
