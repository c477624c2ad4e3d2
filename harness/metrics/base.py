"""What every metric shares: the context it reads, the value it returns, its error and the FID options.

A metric is a ``Component`` spec (see ``harness.metrics.METRICS``) with ``compute(ctx) -> list[MetricValue]``.
A value that cannot be computed (no Inception weights, nothing measured) is a ``MetricValue`` with
``value=None`` and ``attrs["reason"]``: the trial goes on and the reader sees why the number is missing.
"""

from __future__ import annotations

import math
import pathlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field

from components.registry import Component


class MetricError(ValueError):
    """A metric cannot run as configured (e.g. missing or corrupt Inception weights). One-line message."""


class FidOptions(BaseModel):
    """The study file's ``eval.fid`` section."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    mode: Literal["clean", "legacy_tensorflow"] = "clean"  # clean-fid's resize/feature convention
    weights: str | None = None  # path of inception-2015-12-05.pt (TorchScript); None = look it up
    num_reference: int | None = Field(default=None, ge=2)  # first N reference images; None = all
    batch_size: int = Field(default=64, ge=1)  # images per feature-extractor call


@dataclass
class MetricValue:
    """One number for the database: stable snake_case name, value (None = unavailable), unit, attributes."""

    name: str
    value: float | None
    unit: str | None = None
    attrs: dict[str, Any] = field(default_factory=dict)
    step: int | None = None  # a curve's step or a bucket's index; None for a scalar

    def __post_init__(self) -> None:
        if self.value is not None:
            self.value = float(self.value)
            if not math.isfinite(self.value):
                self.attrs = {**self.attrs, "reason": f"non-finite value {self.value}"}
                self.value = None


def unavailable(name: str, reason: str, unit: str | None = None, **attrs: Any) -> MetricValue:
    """A value that could not be computed, with the reason a reader sees."""
    return MetricValue(name, None, unit, {**attrs, "reason": reason})


@dataclass
class EvalContext:
    """Everything a metric may read about one trial. Built by the trial runner after training and sampling."""

    network: torch.nn.Module  # EMA backbone, eval mode: forward(z, logsnr, labels=None)
    image_shape: tuple[int, int, int]  # (C, H, W) of generated and reference images
    device: torch.device
    dtype: torch.dtype  # compute dtype of training (bf16 under CUDA autocast, else fp32)
    samples: Callable[[], torch.Tensor]  # -> uint8 [N, C, H, W] generated images (cached by the runner)
    reference: torch.Tensor  # uint8 [M, C, H, W] reference images: the held-out split of the trial's dataset
    dataset_fingerprint: str  # identifies the reference images (content, split, resolution)
    fid: FidOptions
    seed: int
    cache_dir: pathlib.Path  # harness cache directory (reference statistics, peak FLOP/s)
    stats: dict[str, Any] = field(default_factory=dict)  # runner measurements (train_images_per_s, ...)
    reference_name: str = "holdout"  # which images ``reference`` holds, as recorded with every quality value
    memo: dict[str, Any] = field(default_factory=dict)  # shared between metrics of one evaluation


class Metric(Component):
    """Base of every metric spec: a component (its fields are its parameters, set from a study file's
    ``eval.metrics`` entry ``{name, ...params}``) whose ``compute(ctx)`` returns the values of one trial.

    ``outputs``: the value names ``compute`` writes at every resolution, the headline first;
    ``output_names(resolution)`` adds names that depend on the images (SWD: ``swd_<r>`` per pyramid level), so
    that a study's objectives are checked against what its metrics will write. ``compares_samples``: a quality
    metric of the generated images against the reference set; those also get calibration baselines
    (``harness.metrics.calibration``)."""

    outputs: ClassVar[tuple[str, ...]] = ()
    compares_samples: ClassVar[bool] = False

    def output_names(self, resolution: int) -> tuple[str, ...]:
        """Every value name ``compute`` writes for images ``resolution`` pixels on a side."""
        return self.outputs

    def compute(self, ctx: EvalContext) -> list[MetricValue]:
        raise NotImplementedError
