"""What a study's trials need from this machine, checked before anything is written: each distinct dataset
is probed (files present and readable, within the limits, at least two images; ``probe`` decodes one image,
not the whole set, see docs/datasets.md), its decoded size fits ``dataset_bytes``, each distinct network
stays within ``params`` (counted on PyTorch's meta device: no memory, no time), and a ``cuda`` device exists.

Every problem is a ``UsageError`` naming the study file and the key path.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from components.datasets import OverLimit, ReadLimits
from components.networks.spec import NetworkSpec
from components.registry import Component, ComponentError
from harness import limits
from harness.config.trial import TrialConfig
from harness.errors import UsageError


def read_limits() -> ReadLimits:
    return ReadLimits(**{name: limits.limit(name) for name in ("images", "file_bytes", "zip_ratio", "image_pixels")})


def check_dataset(spec: Component, where: str) -> int:
    """Probe a validated dataset spec; returns its number of images. ``where``: the study file."""
    try:
        count = spec.probe(read_limits())
    except OverLimit as err:
        raise UsageError(f"{where}: dataset.{err.key}: {err.message} ({limits.env_var(err.limit)})") from None
    except ComponentError as err:
        raise UsageError(f"{where}: dataset.{err.key}: {err.message}") from None
    res = spec.resolution
    in_memory = getattr(spec, "bytes_in_memory", None)  # a memory-mapped `array` dataset says what it holds
    held = in_memory(count) if in_memory is not None else count * 3 * res * res
    limits.check("dataset_bytes", held, f"{where}: dataset: {count} images at {res} x {res} (bytes in memory)")
    return count


def count_params(spec: NetworkSpec) -> int:
    """Parameters of a network spec, built on the meta device (shapes only, no storage, no time)."""
    with torch.device("meta"):
        network = spec.instantiate()
    return sum(p.numel() for p in network.parameters())


def check_device(choice: str, where: str) -> None:
    if choice == "cuda" and not torch.cuda.is_available():
        build = f"built with CUDA {torch.version.cuda}" if torch.version.cuda else "a CPU-only build"
        raise UsageError(
            f"{where}: train.device: 'cuda' but this machine has no usable CUDA device (PyTorch {torch.__version__}, "
            f"{build}); use 'auto' or 'cpu', or run the study on a GPU machine"
        )


def check_trials(path: Path, configs: list[TrialConfig]) -> None:
    """Check every distinct dataset, network and device of ``configs`` (resolved trial configs)."""
    seen: set[tuple[str, str]] = set()
    for config in configs:
        for check, value, key in (
            (check_dataset, config.dataset, json.dumps(config.dataset.to_spec(), sort_keys=True)),
            (check_params, config.model, json.dumps(config.model.to_spec(), sort_keys=True)),
            (check_device, config.train.device, config.train.device),
        ):
            if (check.__name__, key) in seen:
                continue
            seen.add((check.__name__, key))
            check(value, str(path))
        check_guidance(config, str(path))


def check_guidance(config: TrialConfig, where: str) -> None:
    """Classifier-free guidance acts on class labels: a guided evaluation sampler needs a class-conditional
    dataset (``labels: true``) and evaluation samples drawn for classes (``eval.labels: balanced``)."""
    scale = getattr(config.eval.sampler, "guidance_scale", 0.0)
    if scale and not getattr(config.dataset, "labels", False):
        raise UsageError(
            f"{where}: eval.sampler.guidance_scale: {scale} needs a class-conditional model (dataset.labels: true)"
        )
    if scale and config.eval.labels == "unconditional":
        raise UsageError(
            f"{where}: eval.sampler.guidance_scale: {scale} has nothing to act on with eval.labels: unconditional"
        )


def check_params(spec: NetworkSpec, where: str) -> None:
    limits.check("params", count_params(spec), f"{where}: model (network parameters)")
