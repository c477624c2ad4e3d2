"""ThroughputMeter, PeakMemory, and the throughput / memory / MFU metrics (no timing thresholds)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from metric_context import cpu_context

from components.registry import ComponentError, validate_spec
from harness.metrics import METRICS, EvalContext, PeakMemory, ThroughputMeter, meters, perf


def test_throughput_meter_ignores_warmup_and_averages_steady_steps():
    meter = ThroughputMeter("cpu", warmup=2)
    assert meter.images_per_s is None and meter.seconds_per_step is None
    for _ in range(2):
        with meter.step(batch_size=8):
            time.sleep(0.001)
    assert meter.images_per_s is None and meter.steady_steps == 0
    for _ in range(3):
        with meter.step(batch_size=8):
            time.sleep(0.002)
    assert meter.steady_steps == 3 and meter.images == 24
    assert meter.images_per_s == pytest.approx(24 / meter.seconds)
    assert meter.seconds_per_step == pytest.approx(meter.seconds / 3)
    assert meter.seconds_per_step >= 0.002


def run_fresh(code: str) -> str:
    """stdout of ``code`` in a fresh process: in a long one (the test session) the allocator may reuse pages
    freed by earlier tests, so a new allocation need not grow RSS."""
    root = Path(__file__).resolve().parent.parent
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=root, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_peak_memory_sees_a_large_allocation_on_cpu():
    code = """
import time, torch
from harness.metrics import PeakMemory
with PeakMemory("cpu") as small:
    pass
assert small.peak_bytes is not None and small.peak_bytes >= 0
with PeakMemory("cpu", interval_s=0.001) as peak:
    block = torch.ones(64 * 2**20 // 4)  # 64 MiB, touched
    time.sleep(0.05)
    del block
print(peak.peak_bytes)
"""
    assert int(run_fresh(code).split()[-1]) >= 32 * 2**20


@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="Linux only: the kernel's peak RSS")
def test_kernel_peak_sees_a_spike_no_sampler_would_and_nesting_falls_back_to_sampling():
    """On Linux the peak is the kernel's (VmHWM, reset at entry): a 64 MiB block touched and freed at once, far
    shorter than any sampling interval, is seen; a block inside another samples instead (one peak per process)."""
    code = """
import torch
from harness.metrics import PeakMemory
with PeakMemory("cpu", interval_s=10.0) as outer:
    block = torch.ones(64 * 2**20 // 4)
    del block
    with PeakMemory("cpu", interval_s=10.0) as inner:
        pass
with PeakMemory("cpu") as after:
    pass
print(outer.peak_bytes, outer.method, inner.method, after.method, sep="|")
"""
    peak, outer, inner, after = run_fresh(code).strip().split("|")
    assert int(peak) >= 32 * 2**20
    assert outer == after == PeakMemory.KERNEL
    assert inner == "growth of process RSS, sampled every 10000 ms"


class ConvNet(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 3, 3, padding=1)

    def forward(self, z: torch.Tensor, logsnr: torch.Tensor, labels=None) -> torch.Tensor:
        return self.conv(z)


def ctx_with(tmp_path, stats: dict, network: torch.nn.Module | None = None) -> EvalContext:
    return cpu_context(network=network or ConvNet(), image_shape=(3, 8, 8), cache_dir=tmp_path, stats=stats)


def test_throughput_and_memory_metrics_record_runner_stats(tmp_path):
    stats = {
        "train_images_per_s": 100.0,
        "train_seconds_per_step": 0.32,
        "sample_images_per_s": 50.0,
        "sample_seconds_per_step": 0.01,
        "train_peak_memory_bytes": 123,
        "sample_peak_memory_bytes": 45,
        "batch_size": 32,
        "sampler_steps": 64,
    }
    ctx = ctx_with(tmp_path, stats)
    values = {v.name: v for v in METRICS["throughput"]().compute(ctx) + METRICS["memory"]().compute(ctx)}
    assert set(values) == set(METRICS["throughput"].outputs + METRICS["memory"].outputs)
    assert values["train_images_per_s"].value == 100.0 and values["train_images_per_s"].unit == "images/s"
    assert values["sample_seconds_per_step"].attrs["sampler_steps"] == 64
    assert values["peak_memory_bytes"].value == 123 and values["sample_peak_memory_bytes"].value == 45
    assert values["peak_memory_bytes"].attrs["phase"] == "train"


def test_missing_stats_are_unavailable_with_reason(tmp_path):
    ctx = ctx_with(tmp_path, {"train_images_per_s": None})
    values = METRICS["throughput"]().compute(ctx) + METRICS["memory"]().compute(ctx)
    assert len(values) == 6
    assert all(v.value is None and "did not measure" in v.attrs["reason"] for v in values)


def test_mfu_is_three_forward_flops_times_throughput_over_the_cached_peak(tmp_path, monkeypatch):
    calls = []

    def fake_measure(device, dtype, budget_s=None):
        calls.append(dtype)
        return {"peak_flops_per_s": 1e9, "matmul_n": 8, "repeats": 1, "measured_at": 0.0, "quiet": True}

    monkeypatch.setattr(perf, "measure_peak_flops", fake_measure)
    ctx = ctx_with(tmp_path, {"train_images_per_s": 10.0})
    values = {v.name: v for v in METRICS["mfu"]().compute(ctx)}
    assert set(values) == set(METRICS["mfu"].outputs)
    flops = 2 * 8 * 8 * 3 * 3 * 9  # conv 3->3, 3x3, 8x8: MACs x 2
    assert values["achieved_flops_per_s"].value == pytest.approx(3 * flops * 10.0)
    assert values["mfu"].value == pytest.approx(3 * flops * 10.0 / 1e9)
    assert values["peak_flops_per_s"].value == 1e9
    assert values["mfu"].attrs["dtype"] == "float32" and "measured" in values["mfu"].attrs["peak_source"]
    METRICS["mfu"]().compute(ctx_with(tmp_path, {"train_images_per_s": 10.0}))  # second trial: cached
    assert len(calls) == 1
    table = json.loads((tmp_path / "peak_flops.json").read_text())
    assert len(table) == 1 and next(iter(table.values()))["peak_flops_per_s"] == 1e9


def test_mfu_with_a_datasheet_peak_and_without_throughput(tmp_path):
    spec = validate_spec("metric", METRICS, {"name": "mfu", "peak_flops_per_s": 2e9})
    values = {v.name: v for v in spec.compute(ctx_with(tmp_path, {}))}
    assert values["mfu"].value is None and "train_images_per_s" in values["mfu"].attrs["reason"]
    assert values["peak_flops_per_s"].value == 2e9 and values["peak_flops_per_s"].attrs["peak_source"].startswith(
        "given"
    )
    with pytest.raises(ComponentError):
        validate_spec("metric", METRICS, {"name": "mfu", "peak_flop": 1})


def test_measured_cpu_peak_is_positive():
    peak = perf.measure_peak_flops(torch.device("cpu"), torch.float32, budget_s=0.2)
    assert peak["peak_flops_per_s"] > 0 and peak["repeats"] >= 3 and peak["other_load_cores"] >= 0


def test_a_peak_measured_under_load_is_seen_and_not_cached(tmp_path):
    """Issue 10: a peak measured while another process spins is flagged and never cached (it would make every
    later trial's MFU too high)."""
    spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.2)  # let it start spinning
        ctx = ctx_with(tmp_path, {"train_images_per_s": 10.0})
        peak = perf.peak_flops(ctx)
    finally:
        spinner.kill()
        spinner.wait()
    assert peak["other_load_cores"] > perf.QUIET_OTHER_CORES and not peak["quiet"]
    assert "under load" in peak["cache"] and not (tmp_path / "peak_flops.json").exists()


def test_mfu_above_one_is_measured_again_or_unavailable(tmp_path, monkeypatch):
    """A too-low cached peak (the poisoned case) gives MFU > 1: the peak is measured afresh and replaces it;
    if that one is too low as well, MFU is unavailable with the reason, never a value above 1."""
    peaks = iter([10.0, 1e12, 10.0, 20.0])  # FLOP/s returned by successive measurements

    def fake_measure(device, dtype, budget_s=None):
        return {"peak_flops_per_s": next(peaks), "matmul_n": 8, "repeats": 1, "measured_at": 0.0, "quiet": True}

    monkeypatch.setattr(perf, "measure_peak_flops", fake_measure)
    first = {v.name: v for v in METRICS["mfu"]().compute(ctx_with(tmp_path, {"train_images_per_s": 10.0}))}
    assert 0 < first["mfu"].value < 1 and first["peak_flops_per_s"].value == 1e12
    table = json.loads((tmp_path / "peak_flops.json").read_text())
    assert next(iter(table.values()))["peak_flops_per_s"] == 1e12  # the poisoned entry was replaced
    (tmp_path / "peak_flops.json").unlink()
    again = {v.name: v for v in METRICS["mfu"]().compute(ctx_with(tmp_path, {"train_images_per_s": 10.0}))}
    assert again["mfu"].value is None and "MFU" in again["mfu"].attrs["reason"]
    assert again["achieved_flops_per_s"].value > 20.0


@pytest.mark.parametrize("name", sorted(METRICS))
def test_every_metric_builds_from_defaults(name):
    spec = validate_spec("metric", METRICS, name)
    assert spec.name == name and callable(spec.compute) and spec.outputs


def test_load_meter_is_other_cpu_time_over_wall_time(monkeypatch):
    """The arithmetic, with the counters replaced: 3 s of CPU machine-wide, 1 s of it ours, over 2 s of wall time
    is 1 core's worth of other load."""
    clock = {"own": 10.0, "system": 100.0, "wall": 50.0}
    monkeypatch.setattr(meters, "own_cpu_s", lambda: clock["own"])
    monkeypatch.setattr(meters, "system_cpu_s", lambda: clock["system"])
    monkeypatch.setattr(meters.time, "perf_counter", lambda: clock["wall"])
    meter = perf.LoadMeter()
    clock.update(own=11.0, system=103.0, wall=52.0)
    stats = meter.stats("train")
    assert stats["train_other_load_cores"] == pytest.approx(1.0)
    assert stats["train_torch_threads"] == torch.get_num_threads() and stats["train_cpu_count"] >= 1


def test_load_meter_sees_a_spinning_process():
    spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.2)  # let it start spinning
        meter = perf.LoadMeter()
        time.sleep(0.5)
        stats = meter.stats("sample")
    finally:
        spinner.kill()
        spinner.wait()
    assert stats["sample_other_load_cores"] > perf.QUIET_OTHER_CORES


@pytest.mark.parametrize(
    ("load", "threads", "cpus", "loaded"),
    [(0.2, 2, 2, False), (0.3, 2, 2, True), (1.2, 1, 2, False), (1.3, 1, 2, True), (3.0, 8, 16, False)],
)
def test_under_load_is_other_load_beyond_the_spare_cores(load, threads, cpus, loaded):
    assert perf.under_load(load, threads, cpus) is loaded


def test_timing_metrics_carry_the_load_they_were_measured_under(tmp_path, monkeypatch):
    peak = {"peak_flops_per_s": 1e12, "quiet": True}
    monkeypatch.setattr(perf, "measure_peak_flops", lambda device, dtype, budget_s=None: peak)
    stats = {"train_images_per_s": 10.0, "sample_images_per_s": 5.0, "train_seconds_per_step": 0.1}
    stats |= {"train_other_load_cores": 1.5, "train_torch_threads": 2, "train_cpu_count": 2}
    stats |= {"sample_other_load_cores": 0.0, "sample_torch_threads": 2, "sample_cpu_count": 2}
    ctx = ctx_with(tmp_path, stats)
    values = {v.name: v for v in METRICS["throughput"]().compute(ctx) + METRICS["mfu"]().compute(ctx)}
    for name in ("train_images_per_s", "train_seconds_per_step", "mfu"):
        attrs = values[name].attrs
        assert attrs["under_load"] is True and attrs["other_load_cores"] == 1.5 and attrs["torch_threads"] == 2
    assert values["sample_images_per_s"].attrs["under_load"] is False
    bare = {v.name: v for v in METRICS["throughput"]().compute(ctx_with(tmp_path, {"train_images_per_s": 1.0}))}
    assert bare["train_images_per_s"].attrs["under_load"] is None
    assert "not measured" in bare["train_images_per_s"].attrs["load_method"]
