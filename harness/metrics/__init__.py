"""Metrics of a trained trial: FID, KID, SWD, FLOPs, throughput, memory, MFU.

A metric is a spec in ``METRICS`` (validated with ``components.registry.validate_spec("metric", METRICS,
spec)``) whose ``compute(ctx: EvalContext) -> list[MetricValue]`` returns stable snake_case values, each
with the attributes a reader needs to compare it. See docs/metrics.md.
"""

from __future__ import annotations

from harness.metrics.base import EvalContext, FidOptions, Metric, MetricError, MetricValue
from harness.metrics.fid import Fid, Kid, compute_fid, frechet_distance, kernel_distance
from harness.metrics.flops import Flops, count_flops
from harness.metrics.inception import preflight
from harness.metrics.meters import LoadMeter, PeakMemory, ThroughputMeter
from harness.metrics.perf import Memory, Mfu, Throughput
from harness.metrics.swd import Swd, swd

METRICS: dict[str, type[Metric]] = {
    "fid": Fid,
    "kid": Kid,
    "swd": Swd,
    "flops": Flops,
    "throughput": Throughput,
    "memory": Memory,
    "mfu": Mfu,
}

__all__ = [
    "METRICS",
    "EvalContext",
    "FidOptions",
    "LoadMeter",
    "Metric",
    "MetricError",
    "MetricValue",
    "PeakMemory",
    "ThroughputMeter",
    "compute_fid",
    "count_flops",
    "frechet_distance",
    "kernel_distance",
    "preflight",
    "swd",
]
