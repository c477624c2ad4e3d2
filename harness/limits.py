"""Upper bounds on what a study file, a dataset, a search space or a query may ask for, in one table.

Small inputs must not hang a machine or exhaust its memory (a grid of 10^12 cells, a 10^9-step run, a YAML
alias bomb, a zip bomb, a recursive SQL query). Every bound is a named entry of ``LIMITS``, can be raised
with the environment variable ``HARNESS_MAX_<NAME>`` and is named in the error that enforces it, e.g.
``error: s.yaml: train.steps: 20000000 is above the limit 10000000 (HARNESS_MAX_STEPS)``.

The defaults sit well above a paper-size GPU run (simple diffusion's largest: a 2B-parameter U-ViT, batch
2048, 500k steps, 512 x 512 images, 512 sampler steps, FID on 50k samples). The one that binds first is
``dataset_bytes``: the harness keeps a decoded dataset in memory (ImageNet at 64 px is 15.7 GB, at
128 px 63 GB); a memory-mapped ``array`` dataset is not counted (only a ``max_images`` subset, which is copied).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from harness.errors import UsageError

MIB, GIB = 1 << 20, 1 << 30


@dataclass(frozen=True)
class Limit:
    default: int
    what: str  # what is counted, with its unit


LIMITS = {
    "steps": Limit(10_000_000, "optimizer steps of a trial (also warm-up, checkpoint and log intervals)"),
    "batch_size": Limit(65_536, "images per training, sampling or feature-extraction batch"),
    "resolution": Limit(4096, "image side, pixels"),
    "images": Limit(20_000_000, "images of a dataset (shapes' num_images, files of a folder or zip)"),
    "dataset_bytes": Limit(64 * GIB, "decoded dataset in memory: images x 3 x resolution^2 bytes"),
    "samples": Limit(1_000_000, "generated images per trial (eval.num_samples, eval.grid_size)"),
    "sampler_steps": Limit(100_000, "network evaluations per sample (eval.sampler.steps)"),
    "repeats": Limit(1000, "validation-loss noise draws and logSNR buckets (eval.val_repeats, eval.val_buckets)"),
    "params": Limit(10_000_000_000, "network parameters"),
    "trials": Limit(10_000, "trials of a study (grid cells, search.n_trials)"),
    "study_file_bytes": Limit(1 * MIB, "bytes of a study file"),
    "yaml_nodes": Limit(100_000, "YAML nodes of a study file or --set value, aliases expanded"),
    "file_bytes": Limit(256 * MIB, "bytes of one image file or zip member (uncompressed)"),
    "zip_ratio": Limit(100, "uncompressed / compressed size of one zip member"),
    "image_pixels": Limit(100_000_000, "pixels (width x height) of one source image"),
    "connect_seconds": Limit(5, "seconds to connect to a database server"),
    "sql_seconds": Limit(300, "seconds one --sql statement may run"),
    "sql_rows": Limit(1_000_000, "rows one --sql statement may return"),
}

# key paths of a trial config -> the limit bounding them (None values are not checked)
CONFIG_LIMITS = {
    "train.steps": "steps",
    "train.warmup_steps": "steps",
    "train.checkpoint_every": "steps",
    "train.log_every": "steps",
    "train.batch_size": "batch_size",
    "eval.batch_size": "batch_size",
    "eval.fid.batch_size": "batch_size",
    "eval.num_samples": "samples",
    "eval.grid_size": "samples",
    "eval.sampler.steps": "sampler_steps",
    "eval.val_repeats": "repeats",
    "eval.val_buckets": "repeats",
    "eval.fid.num_reference": "images",
    "dataset.resolution": "resolution",
    "dataset.num_images": "images",
    "dataset.max_images": "images",
}


def env_var(name: str) -> str:
    return f"HARNESS_MAX_{name.upper()}"


def limit(name: str) -> int:
    """The value of limit ``name``: ``$HARNESS_MAX_<NAME>`` when set, else the default."""
    raw = os.environ.get(env_var(name), "").strip()
    if not raw:
        return LIMITS[name].default
    try:
        value = int(raw.replace("_", ""))
    except ValueError:
        value = 0
    if value < 1:
        raise UsageError(f"${env_var(name)}: must be a positive integer ({LIMITS[name].what}), got {raw!r}")
    return value


def exceeded(name: str, value: int | float, where: str) -> UsageError:
    """The error for ``value`` above limit ``name`` at ``where`` (a file and key path)."""
    shown = int(value) if isinstance(value, float) and value.is_integer() else value
    return UsageError(f"{where}: {shown} is above the limit {limit(name)} ({env_var(name)})")


def check(name: str, value: int | float | None, where: str) -> None:
    """Raise ``exceeded`` when ``value`` is above limit ``name``; None passes."""
    if value is not None and value > limit(name):
        raise exceeded(name, value, where)


def check_config(config: Any) -> None:
    """Every bounded key of a trial config (``CONFIG_LIMITS``), as written (mappings) or resolved (a typed
    ``TrialConfig``: the same key paths as attributes); UsageError names the key path."""
    for key, name in CONFIG_LIMITS.items():
        node: Any = config
        for part in key.split("."):
            node = node.get(part) if isinstance(node, dict) else getattr(node, part, None)
        if isinstance(node, int | float) and not isinstance(node, bool):
            check(name, node, key)
