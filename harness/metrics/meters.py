"""The instruments the trial runner times and measures with: steps per second (``ThroughputMeter``), the
peak memory of a phase (``PeakMemory``: the kernel's own peak on Linux, the device allocator's on CUDA) and the
CPU load of other processes meanwhile (``LoadMeter``, ``under_load``). The metrics that record their numbers
are in ``harness.metrics.perf``.
"""

from __future__ import annotations

import contextlib
import os
import platform
import threading
import time
from collections.abc import Iterator
from typing import Any

import psutil
import torch


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class ThroughputMeter:
    """Times steps; the first ``warmup`` steps are ignored (compilation, allocator and cache warm-up).

    ``images_per_s`` = images over the steady steps / their total time; ``seconds_per_step`` = that total
    time / number of steady steps (total-over-steady-steps, not a median: a slow step counts).
    Under CUDA the device is synchronised before the clock is read at both ends of a step.
    """

    def __init__(self, device: torch.device | str, warmup: int = 5):
        self.device = torch.device(device)
        self.warmup = warmup
        self.steps = 0  # all steps, warm-up included
        self.images = 0  # images of the steady steps
        self.seconds = 0.0  # wall time of the steady steps

    @contextlib.contextmanager
    def step(self, batch_size: int) -> Iterator[None]:
        sync(self.device)
        start = time.perf_counter()
        yield
        sync(self.device)
        elapsed = time.perf_counter() - start
        self.steps += 1
        if self.steps > self.warmup:
            self.images += batch_size
            self.seconds += elapsed

    @property
    def steady_steps(self) -> int:
        return max(0, self.steps - self.warmup)

    @property
    def images_per_s(self) -> float | None:
        return self.images / self.seconds if self.steady_steps and self.seconds > 0 else None

    @property
    def seconds_per_step(self) -> float | None:
        return self.seconds / self.steady_steps if self.steady_steps else None


class PeakMemory:
    """Peak memory of a block. ``peak_bytes`` after exit; ``method`` says how it was measured.

    CUDA: ``torch.cuda.max_memory_allocated`` after resetting the peak at entry (absolute: includes what
    was allocated before the block, e.g. the weights). CPU: the growth of the process's resident set size
    over the block (peak RSS during the block minus RSS at entry; 0 if RSS never grew). On Linux the kernel
    keeps that peak for free and exactly (``VmHWM`` in ``/proc/self/status``, reset to the current RSS by
    writing ``5`` to ``/proc/self/clear_refs``); elsewhere, or inside another ``PeakMemory`` (the kernel keeps
    one peak per process), or where ``clear_refs`` cannot be written, a background thread samples the RSS
    every ``interval_s`` (a spike shorter than the interval can be missed; the thread costs a few per cent of
    a CPU-bound loop, which is why it is only the fallback).
    """

    KERNEL = "growth of process RSS: kernel peak (VmHWM, reset through /proc/self/clear_refs)"
    _kernel_users = 0  # PeakMemory blocks now reading the kernel's peak in this process (one at a time)
    _kernel_lock = threading.Lock()

    def __init__(self, device: torch.device | str, interval_s: float = 0.005):
        self.device = torch.device(device)
        self.interval_s = interval_s
        self.peak_bytes: int | None = None
        self.method = (
            "torch.cuda.max_memory_allocated (absolute)"
            if self.device.type == "cuda"
            else f"growth of process RSS, sampled every {interval_s * 1e3:g} ms"
        )
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._kernel = False
        self._base = 0
        self._max = 0

    def _sample(self, proc: psutil.Process) -> None:
        while not self._stop.wait(self.interval_s):
            self._max = max(self._max, proc.memory_info().rss)

    def _use_kernel_peak(self) -> bool:
        """Reset the kernel's peak RSS to the current RSS, if this block may and can (Linux, not nested)."""
        with PeakMemory._kernel_lock:
            if PeakMemory._kernel_users:
                return False
            try:
                with open("/proc/self/clear_refs", "w") as f:
                    f.write("5")
                _status_kb("VmHWM")
            except (OSError, ValueError):
                return False
            PeakMemory._kernel_users += 1
            return True

    def __enter__(self) -> PeakMemory:
        if self.device.type == "cuda":
            sync(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            return self
        proc = psutil.Process(os.getpid())
        self._base = self._max = proc.memory_info().rss
        self._kernel = self._use_kernel_peak()
        if self._kernel:
            self.method = self.KERNEL
            return self
        self._stop.clear()
        self._thread = threading.Thread(target=self._sample, args=(proc,), daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.device.type == "cuda":
            sync(self.device)
            self.peak_bytes = int(torch.cuda.max_memory_allocated(self.device))
            return
        if self._kernel:
            try:
                self._max = max(self._max, _status_kb("VmHWM") * 1024)
            finally:
                with PeakMemory._kernel_lock:
                    PeakMemory._kernel_users -= 1
        else:
            self._stop.set()
            if self._thread is not None:
                self._thread.join()
        self._max = max(self._max, psutil.Process(os.getpid()).memory_info().rss)
        self.peak_bytes = int(self._max - self._base)


def _status_kb(field: str) -> int:
    """A ``kB`` field of ``/proc/self/status`` (Linux), e.g. ``VmHWM``; OSError/ValueError where there is none."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise ValueError(f"no {field} in /proc/self/status")


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    name = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        with open("/proc/cpuinfo") as f:
            name = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), name)
    return f"{name} ({torch.get_num_threads()} threads)"


QUIET_OTHER_CORES = 0.25  # a peak measured while other processes used more CPU than this is not cached


def other_cpu_load(own_before: float, system_before: float, wall_s: float) -> float:
    """Cores' worth of CPU time other processes used since the two readings (``own_cpu_s``/``system_cpu_s``)."""
    other = (system_cpu_s() - system_before) - (own_cpu_s() - own_before)
    return max(0.0, other / max(wall_s, 1e-9))


def own_cpu_s() -> float:
    t = psutil.Process(os.getpid()).cpu_times()
    return t.user + t.system


def system_cpu_s() -> float:
    t = psutil.cpu_times()
    return t.user + t.system + getattr(t, "nice", 0.0) + getattr(t, "irq", 0.0) + getattr(t, "softirq", 0.0)


def under_load(other_load_cores: float, torch_threads: int, cpu_count: int) -> bool:
    """Whether a timing shared its cores: other processes used more than the cores this process left spare
    (``cpu_count - torch_threads``) plus QUIET_OTHER_CORES. Logical cores; an approximation (hyperthreads and
    memory bandwidth are shared even below the line)."""
    return other_load_cores > max(0, cpu_count - torch_threads) + QUIET_OTHER_CORES


class LoadMeter:
    """The machine load during a timed phase: created at its start, ``stats(phase)`` at its end gives the runner's
    ``<phase>_other_load_cores`` (cores' worth of CPU other processes used meanwhile), ``<phase>_torch_threads``
    and ``<phase>_cpu_count``, which the throughput and MFU metrics record with their values."""

    def __init__(self) -> None:
        self.own0, self.system0, self.wall0 = own_cpu_s(), system_cpu_s(), time.perf_counter()

    def stats(self, phase: str) -> dict[str, float | int]:
        load = other_cpu_load(self.own0, self.system0, time.perf_counter() - self.wall0)
        return {
            f"{phase}_other_load_cores": round(load, 3),
            f"{phase}_torch_threads": torch.get_num_threads(),
            f"{phase}_cpu_count": psutil.cpu_count() or 1,
        }
