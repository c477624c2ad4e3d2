"""Throughput, peak memory and model FLOPs utilisation (MFU).

The trial runner measures with ``ThroughputMeter`` and ``PeakMemory`` while it trains and samples and
puts the numbers in ``EvalContext.stats``; the ``throughput`` and ``memory`` metrics only record them.
``mfu`` = achieved training FLOP/s / peak FLOP/s, with achieved = 3 x forward FLOPs per image x training
images/s (forward + backward = 3 forward passes, the usual convention of Kaplan et al. 2020 and PaLM) and
the peak measured per host, device, threads and dtype with a large matrix product, cached in
``cache_dir/peak_flops.json`` only when the machine was quiet during the measurement (a peak measured under
load is too low and would inflate every later MFU). An MFU above 1 is never reported as valid: the peak is
measured again, and if it still is above 1 the value is recorded unavailable with the reason.

Under torchrun (one trial trained by several processes with DDP, ``harness.trial.parallel``) the training
values are the whole job's: images/s of the global batch, MFU against the peak of all its devices
(world size x one device's), peak memory of the device that used the most; each carries ``world_size``,
the per-device batch and every rank's own figures (``by_rank``), and images/s per device.

Every timing value carries what it was measured under: torch threads, logical CPUs and the CPU load of other
processes during its phase (``LoadMeter``, read by the runner at the start and end of training and of
sampling), and ``under_load`` when that load ate into the cores the timing needed (the report flags those).
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import time
from typing import Any, ClassVar

import psutil
import torch
from pydantic import Field

from harness.metrics.base import EvalContext, Metric, MetricValue, unavailable
from harness.metrics.flops import CONVENTION, flops_of
from harness.metrics.meters import (  # the instruments behind these metrics, also reachable from here
    QUIET_OTHER_CORES,
    LoadMeter,
    PeakMemory,
    ThroughputMeter,
    device_name,
    other_cpu_load,
    own_cpu_s,
    sync,
    system_cpu_s,
    under_load,
)

__all__ = [
    "QUIET_OTHER_CORES",
    "LoadMeter",
    "Memory",
    "Mfu",
    "PeakMemory",
    "Throughput",
    "ThroughputMeter",
    "device_name",
    "load_attrs",
    "measure_peak_flops",
    "other_cpu_load",
    "own_cpu_s",
    "peak_flops",
    "system_cpu_s",
    "under_load",
]


def load_attrs(ctx: EvalContext, phase: str) -> dict[str, Any]:
    """What a timing of ``phase`` (train, sample) was measured under, from the runner's ``LoadMeter`` stats."""
    load = ctx.stats.get(f"{phase}_other_load_cores")
    threads = ctx.stats.get(f"{phase}_torch_threads", torch.get_num_threads())
    cpus = ctx.stats.get(f"{phase}_cpu_count", psutil.cpu_count() or 1)
    attrs: dict[str, Any] = {"torch_threads": threads, "cpu_count": cpus, "other_load_cores": load}
    if load is None:
        return {**attrs, "under_load": None, "load_method": f"not measured (the runner gave no {phase} load)"}
    return {
        **attrs,
        "under_load": under_load(float(load), int(threads), int(cpus)),
        "load_method": "CPU time of other processes over the phase's wall time (psutil), in cores",
    }


def measure_peak_flops(device: torch.device, dtype: torch.dtype, budget_s: float | None = None) -> dict[str, Any]:
    """Best FLOP/s of repeated square matrix products (n x n x n, 2 n^3 FLOPs each) within ``budget_s``, with
    the CPU load of other processes during the measurement (``other_load_cores``) and whether it was quiet."""
    cpu = device.type == "cpu"
    own0, sys0, wall0 = own_cpu_s(), system_cpu_s(), time.perf_counter()
    n = 1024 if cpu else 8192
    budget_s = budget_s if budget_s is not None else (1.0 if cpu else 3.0)
    a = torch.randn(n, n, device=device).to(dtype)
    b = torch.randn(n, n, device=device).to(dtype)
    torch.matmul(a, b)  # warm-up (kernel selection, thread pool)
    sync(device)
    best, reps, deadline = 0.0, 0, time.perf_counter() + budget_s
    while time.perf_counter() < deadline or reps < 3:
        sync(device)
        start = time.perf_counter()
        for _ in range(1 if cpu else 10):
            torch.matmul(a, b)
        sync(device)
        elapsed = time.perf_counter() - start
        best = max(best, (1 if cpu else 10) * 2 * n**3 / elapsed)
        reps += 1
    load = other_cpu_load(own0, sys0, time.perf_counter() - wall0)
    return {
        "peak_flops_per_s": best,
        "matmul_n": n,
        "repeats": reps,
        "measured_at": time.time(),
        "other_load_cores": round(load, 3),
        "quiet": load < QUIET_OTHER_CORES,
    }


def peak_flops(ctx: EvalContext, fresh: bool = False) -> dict[str, Any]:
    """Measured peak for (host, device with its threads, dtype), from ``cache_dir/peak_flops.json`` unless
    ``fresh``; a new measurement is cached only when it was taken on a quiet machine."""
    key = f"{socket.gethostname()}|{device_name(ctx.device)}|{str(ctx.dtype).removeprefix('torch.')}"
    path = ctx.cache_dir / "peak_flops.json"
    table: dict[str, Any] = {}
    with contextlib.suppress(OSError, ValueError):
        table = json.loads(path.read_text())
    if not fresh and isinstance(table.get(key), dict) and table[key].get("quiet"):
        return {**table[key], "key": key, "cache": "hit"}
    entry = measure_peak_flops(ctx.device, ctx.dtype)
    if not entry["quiet"]:
        return {**entry, "key": key, "cache": "not stored (measured under load)"}
    with contextlib.suppress(OSError, ValueError):  # another worker may have written meanwhile
        table = json.loads(path.read_text())
    table[key] = entry
    path.parent.mkdir(parents=True, exist_ok=True)
    part = path.with_name(f"{path.name}.part{os.getpid()}")
    part.write_text(json.dumps(table, indent=1, sort_keys=True))
    part.replace(path)
    return {**entry, "key": key, "cache": "miss"}


def _stat(ctx: EvalContext, name: str) -> float | None:
    value = ctx.stats.get(name)
    return None if value is None else float(value)


def job_attrs(ctx: EvalContext) -> dict[str, Any]:
    """How many processes trained the trial together, with what share of the batch, and each rank's figures."""
    attrs: dict[str, Any] = {"world_size": int(ctx.stats.get("world_size", 1))}
    if ctx.stats.get("per_device_batch_size") is not None:
        attrs["per_device_batch_size"] = ctx.stats["per_device_batch_size"]
    if attrs["world_size"] > 1 and ctx.stats.get("by_rank"):
        attrs["by_rank"] = ctx.stats["by_rank"]
    return attrs


def _recorded(ctx: EvalContext, name: str, unit: str, **attrs: Any) -> MetricValue:
    value = _stat(ctx, name)
    if value is None:
        return unavailable(name, f"the runner did not measure {name}", unit, **attrs)
    return MetricValue(name, value, unit, attrs)


class Throughput(Metric):
    """Training and sampling throughput measured by the runner (steady state, after warm-up steps)."""

    outputs: ClassVar[tuple[str, ...]] = (
        "train_images_per_s",
        "train_seconds_per_step",
        "sample_images_per_s",
        "sample_seconds_per_step",
    )

    def compute(self, ctx: EvalContext) -> list[MetricValue]:
        common = {
            "device": device_name(ctx.device),
            "dtype": str(ctx.dtype).removeprefix("torch."),
            "batch_size": ctx.stats.get("batch_size"),
            "method": "total images / total time over steady-state steps (warm-up excluded)",
        }
        sample = {
            **common,
            **load_attrs(ctx, "sample"),
            "sampler_steps": ctx.stats.get("sampler_steps"),
            "sampler_dtype": ctx.stats.get("sample_dtype"),  # eval.sampler_dtype as applied (autocast or not)
            "sampler_compiled": ctx.stats.get("sample_compiled"),  # eval.sampler_compile
            "step": "one sampler step (one network evaluation of the batch)",
        }
        train = {**common, **load_attrs(ctx, "train"), **job_attrs(ctx)}
        images_per_s = _stat(ctx, "train_images_per_s")
        if images_per_s is not None:
            train["images_per_s_per_device"] = images_per_s / train["world_size"]
        return [
            _recorded(ctx, "train_images_per_s", "images/s", **train),
            _recorded(ctx, "train_seconds_per_step", "s", **train, step="one optimiser step"),
            _recorded(ctx, "sample_images_per_s", "images/s", **sample),
            _recorded(ctx, "sample_seconds_per_step", "s", **sample),
        ]


class Memory(Metric):
    """Peak memory of training and of sampling, as measured by the runner with ``PeakMemory``."""

    outputs: ClassVar[tuple[str, ...]] = ("peak_memory_bytes", "sample_peak_memory_bytes")

    def compute(self, ctx: EvalContext) -> list[MetricValue]:
        default = PeakMemory(ctx.device).method  # what the runner's PeakMemory says when it recorded no method
        attrs = {"device": device_name(ctx.device), "batch_size": ctx.stats.get("batch_size")}
        train_attrs = {**attrs, "method": ctx.stats.get("train_peak_memory_method", default)}
        sample_attrs = {**attrs, "method": ctx.stats.get("sample_peak_memory_method", default)}
        train = _stat(ctx, "train_peak_memory_bytes")
        job = job_attrs(ctx)
        by_rank = [r.get("train_peak_memory_bytes") for r in job.get("by_rank", [])]
        if train is not None and by_rank and all(v is not None for v in by_rank):
            train = float(max(by_rank))  # the device that needed the most
            job["total_bytes"] = int(sum(by_rank))
        out = [
            MetricValue("peak_memory_bytes", train, "bytes", {**train_attrs, **job, "phase": "train"})
            if train is not None
            else unavailable(
                "peak_memory_bytes", "the runner did not measure train_peak_memory_bytes", "bytes", **train_attrs
            )
        ]
        out.append(_recorded(ctx, "sample_peak_memory_bytes", "bytes", **sample_attrs, phase="sample"))
        return out


class Mfu(Metric):
    """Model FLOPs utilisation of training: 3 x forward FLOPs x images/s over the device's peak FLOP/s."""

    outputs: ClassVar[tuple[str, ...]] = ("mfu", "achieved_flops_per_s", "peak_flops_per_s")

    peak_flops_per_s: float | None = Field(default=None, gt=0)  # datasheet peak; None = measure (matmul)

    def compute(self, ctx: EvalContext) -> list[MetricValue]:
        dtype = str(ctx.dtype).removeprefix("torch.")
        images_per_s = _stat(ctx, "train_images_per_s")
        if self.peak_flops_per_s is not None:
            peak = {"peak_flops_per_s": self.peak_flops_per_s, "source": "given (mfu.peak_flops_per_s)"}
        else:
            peak = {**peak_flops(ctx), "source": "measured: best n x n matmul FLOP/s"}
        devices = int(ctx.stats.get("world_size", 1))  # every device of the job trains (DDP)
        attrs = {
            "dtype": dtype,
            "device": device_name(ctx.device),
            **load_attrs(ctx, "train"),
            **job_attrs(ctx),
            "peak_source": peak["source"],
            "peak": peak,
            "convention": "achieved = 3 x forward flops_per_image x train_images_per_s; mfu = achieved / "
            "(world_size x peak_flops_per_s of one device); " + CONVENTION,
        }
        peak_value = MetricValue("peak_flops_per_s", peak["peak_flops_per_s"], "FLOP/s", attrs)
        try:
            flops = flops_of(ctx)["flops_per_image"]
        except Exception as err:  # untraceable network: no MFU, the trial goes on
            reason = f"no FLOP count: {type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
            return [
                unavailable("mfu", reason, **attrs),
                unavailable("achieved_flops_per_s", reason, "FLOP/s"),
                peak_value,
            ]
        if images_per_s is None:
            reason = "the runner did not measure train_images_per_s"
            return [
                unavailable("mfu", reason, **attrs),
                unavailable("achieved_flops_per_s", reason, "FLOP/s"),
                peak_value,
            ]
        achieved = 3 * flops * images_per_s
        if achieved > devices * peak["peak_flops_per_s"] and self.peak_flops_per_s is None:
            peak = {**peak_flops(ctx, fresh=True), "source": "measured again: MFU above 1 with the first peak"}
        attrs = {**attrs, "peak_source": peak["source"], "peak": peak, "flops_per_image": flops}
        attrs["train_images_per_s"] = images_per_s
        attrs["achieved_flops_per_s_per_device"] = achieved / devices
        peak_value = MetricValue("peak_flops_per_s", peak["peak_flops_per_s"], "FLOP/s", attrs)
        achieved_value = MetricValue("achieved_flops_per_s", achieved, "FLOP/s", attrs)
        mfu = achieved / (devices * peak["peak_flops_per_s"])
        if mfu > 1:
            reason = (
                f"MFU {mfu:.2f} > 1: the peak ({devices} x {peak['peak_flops_per_s']:.3g} FLOP/s, {peak['source']}) "
                "is below what training achieved; not a valid utilisation (peak measured under load, or a wrong "
                "FLOP count)"
            )
            return [unavailable("mfu", reason, **attrs), achieved_value, peak_value]
        return [MetricValue("mfu", mfu, None, attrs), achieved_value, peak_value]
