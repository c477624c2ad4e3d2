"""``config.yaml`` in a trial's folder: its resolved config, readable beside its checkpoints and samples."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import yaml

from harness.config import TrialConfig

CONFIG_FILE = "config.yaml"
HEADER = """\
# The resolved configuration of the trials in this folder (study {name!r}): every default filled in, the
# searched values merged in; the database's harness_trials.config_json holds the same (with the study's
# storage URL, left out here). Written by the harness for reading: editing it changes nothing.
"""


def config_text(config: TrialConfig) -> str:
    """The YAML text of ``config.yaml``: the header, then ``config.to_json()`` without the storage URL (not part
    of the trial, and it may carry a password), keys in the study file's order."""
    data = {key: value for key, value in config.to_json().items() if key != "storage"}
    return HEADER.format(name=config.name) + yaml.safe_dump(
        data, sort_keys=False, allow_unicode=True, default_flow_style=None, width=120
    )


def write_config_file(config: TrialConfig, folder: Path) -> Path:
    """Write ``folder/config.yaml`` atomically (a temporary file in the folder, then renamed over it): a
    reader, or a crash, never sees half a file; two workers writing the same folder write the same text."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / CONFIG_FILE
    fd, tmp = tempfile.mkstemp(prefix=".config.", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(config_text(config))
        os.chmod(tmp, 0o644)  # mkstemp makes it private; the folder's other files are readable too
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
