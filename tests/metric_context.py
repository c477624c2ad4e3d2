"""A CPU ``EvalContext`` for metric tests: defaults for every field, overridden by keyword."""

from __future__ import annotations

from typing import Any

import torch

from harness.metrics import EvalContext, FidOptions


def cpu_context(**fields: Any) -> EvalContext:
    defaults: dict[str, Any] = {
        "network": torch.nn.Identity(),
        "image_shape": (3, 32, 32),
        "device": torch.device("cpu"),
        "dtype": torch.float32,
        "samples": lambda: None,
        "reference": None,
        "dataset_fingerprint": "x",
        "fid": FidOptions(),
        "seed": 0,
        "cache_dir": None,
    }
    return EvalContext(**{**defaults, **fields})
