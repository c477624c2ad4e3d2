"""What a study's trials need from this machine, checked before anything is written: each distinct dataset
is probed (files present and readable, within the limits, at least two images; ``probe`` decodes one image,
not the whole set, see docs/datasets.md), its decoded size fits ``dataset_bytes``, each distinct network
stays within ``params`` (counted on PyTorch's meta device: no memory, no time), and a ``cuda`` device exists.

Every problem is a ``UsageError`` naming the study file and the key path.
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import Any

import torch

import components
from components.datasets import OverLimit, ReadLimits
from components.registry import ComponentError
from harness import limits
from harness.errors import UsageError


def read_limits() -> ReadLimits:
    return ReadLimits(**{name: limits.limit(name) for name in ("images", "file_bytes", "zip_ratio", "image_pixels")})


def check_dataset(spec: dict[str, Any], where: str) -> int:
    """Probe a resolved dataset spec; returns its number of images. ``where``: the study file."""
    try:
        count = components.validate("dataset", spec).probe(read_limits())
    except OverLimit as err:
        raise UsageError(f"{where}: dataset.{err.key}: {err.message} ({limits.env_var(err.limit)})") from None
    except ComponentError as err:
        raise UsageError(f"{where}: dataset.{err.key}: {err.message}") from None
    res = spec["resolution"]
    limits.check(
        "dataset_bytes", count * 3 * res * res, f"{where}: dataset: {count} images at {res} x {res} (bytes in memory)"
    )
    return count


@lru_cache(maxsize=64)
def count_params(model_json: str) -> int:
    """Parameters of a resolved network spec, built on the meta device (shapes only, no storage)."""
    with torch.device("meta"):
        network = components.build("network", json.loads(model_json))
    return sum(p.numel() for p in network.parameters())


def check_device(choice: str, where: str) -> None:
    if choice == "cuda" and not torch.cuda.is_available():
        build = f"built with CUDA {torch.version.cuda}" if torch.version.cuda else "a CPU-only build"
        raise UsageError(
            f"{where}: train.device: 'cuda' but this machine has no usable CUDA device (PyTorch {torch.__version__}, "
            f"{build}); use 'auto' or 'cpu', or run the study on a GPU machine"
        )


def check_trials(path: Path, configs: list[dict[str, Any]]) -> None:
    """Check every distinct dataset, network and device of ``configs`` (resolved trial configs)."""
    seen: set[tuple[str, str]] = set()
    for config in configs:
        for kind in ("dataset", "model", "device"):
            value = config["train"]["device"] if kind == "device" else config[kind]
            key = (kind, json.dumps(value, sort_keys=True))
            if key in seen:
                continue
            seen.add(key)
            if kind == "dataset":
                check_dataset(value, str(path))
            elif kind == "model":
                limits.check("params", count_params(key[1]), f"{path}: model (network parameters)")
            else:
                check_device(value, str(path))
