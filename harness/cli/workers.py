"""``python -m harness.study STUDY.yaml --workers N|auto``: N worker processes on one study, one per device.

Each worker is ``python -m harness.study`` with the same arguments (``--n-trials`` is per worker), pinned to
its device: ``CUDA_VISIBLE_DEVICES`` names one GPU (worker i gets the i-th visible GPU, round robin when N is
larger), and every worker computes with ``cores // N`` torch threads (``OMP_NUM_THREADS``, ``MKL_NUM_THREADS``;
an ``OMP_NUM_THREADS`` the user set is kept, as torchrun keeps it).
``auto``: one worker per visible GPU when the study trains on CUDA, else one per usable CPU core (one
thread each), never more than the study's planned trials. The workers share the study through its
database as separate commands would (cell claims make every trial run once, also on SQLite).

Their output is one display: every line a worker prints, prefixed with ``[wI]`` (progress-bar redraws,
which end in a carriage return, are left out; a note every worker prints is shown once). The exit status
is one: 0 when every worker exited 0, 130 after Ctrl-C, else the first non-zero code (1 for a worker
killed by a signal). Ctrl-C (or SIGTERM) is passed to every worker once; each records its running trial
as interrupted and exits; a second Ctrl-C kills them. Running the same command again resumes.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from io import BufferedReader
from typing import IO

import torch

from harness.config import LoadedStudy
from harness.errors import UsageError
from harness.trial.runner import pick_device

STOP_GRACE_S = 120  # after Ctrl-C, how long workers may take to record their trials before they are killed


@dataclass(frozen=True)
class WorkerPlan:
    """One worker: its index, what it computes on (for the display), and its environment changes."""

    index: int
    device: str
    env: dict[str, str] = field(default_factory=dict)


def usable_cores() -> int:
    """CPU cores this process may run on (its affinity mask where the OS has one)."""
    try:
        return len(os.sched_getaffinity(0)) or 1
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def visible_gpus() -> list[str]:
    """The CUDA devices this process sees, as ``CUDA_VISIBLE_DEVICES`` entries (indices or UUIDs)."""
    given = os.environ.get("CUDA_VISIBLE_DEVICES")
    if given is not None:
        return [entry.strip() for entry in given.split(",") if entry.strip()]
    return [str(i) for i in range(torch.cuda.device_count())]


def given_threads() -> int | None:
    """Threads per worker the user fixed with ``OMP_NUM_THREADS`` (as torchrun honours it), else None."""
    try:
        value = int(os.environ.get("OMP_NUM_THREADS", ""))
    except ValueError:
        return None
    return value if value > 0 else None


def planned_trials(loaded: LoadedStudy, n_trials: int | None) -> int:
    """How many trials the study plans in all (grid cells, or ``search.n_trials``), for ``auto``."""
    planned = len(loaded.planned_cells()) if loaded.spec.search.sampler == "grid" else loaded.spec.search.n_trials
    return max(1, planned or 1)


def plan_workers(value: str, loaded: LoadedStudy, n_trials: int | None) -> list[WorkerPlan]:
    """The workers ``--workers VALUE`` asks for on this machine (see the module docstring)."""
    on_gpu = pick_device(loaded.base.train.device).type == "cuda"
    gpus = visible_gpus() if on_gpu else []
    cores = usable_cores()
    if value == "auto":
        count = min(len(gpus) if on_gpu else cores, planned_trials(loaded, n_trials))
    else:
        try:
            count = int(value)
        except ValueError:
            count = 0
        if count < 1:
            raise UsageError(f"{loaded.path}: --workers: must be a positive integer or 'auto', got {value!r}")
    if count > 1024:
        raise UsageError(f"{loaded.path}: --workers: {count} is more than 1024 processes")
    threads = given_threads() or max(1, cores // count)
    plans = []
    for i in range(max(1, count)):
        env = {"OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads), "HARNESS_WORKER": str(i)}
        device = f"cpu, {threads} thread{'s' if threads > 1 else ''}"
        if on_gpu:
            env["CUDA_VISIBLE_DEVICES"] = gpus[i % len(gpus)]
            device = f"cuda device {gpus[i % len(gpus)]}, {threads} CPU thread{'s' if threads > 1 else ''}"
        plans.append(WorkerPlan(i, device, env))
    return plans


def worker_command(argv: list[str]) -> list[str]:
    """What each worker runs: this command line without ``--workers VALUE`` / ``--workers=VALUE``."""
    out, skip = [sys.executable, "-m", "harness.study"], False
    for arg in argv:
        if skip:
            skip = False
        elif arg == "--workers":
            skip = True
        elif not arg.startswith("--workers="):
            out.append(arg)
    return out


class Display:
    """One display for every worker's output: whole lines, prefixed, never interleaved mid-line."""

    def __init__(self, out: IO[str]):
        self.out, self.lock, self.notes = out, threading.Lock(), set()

    def line(self, prefix: str, text: str) -> None:
        with self.lock:
            if text.startswith("note: "):
                if text in self.notes:
                    return
                self.notes.add(text)
            self.out.write(f"{prefix}{text}\n")
            self.out.flush()

    def pump(self, prefix: str, stream: BufferedReader) -> None:
        """Forward ``stream`` line by line; a segment ended by a carriage return is a progress redraw: dropped."""
        pending = b""
        while chunk := stream.read1(65536):
            pending += chunk
            while True:
                cut = min((i for i in (pending.find(b"\n"), pending.find(b"\r")) if i >= 0), default=-1)
                if cut < 0:
                    break
                segment, ender, pending = pending[:cut], pending[cut : cut + 1], pending[cut + 1 :]
                if ender == b"\n" and segment.strip():
                    self.line(prefix, segment.decode(errors="replace"))
        if pending.strip():
            self.line(prefix, pending.decode(errors="replace"))


def describe_exit(code: int) -> str:
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"


def run_workers(plans: list[WorkerPlan], command: list[str], display: Display) -> int:
    """Start ``command`` once per plan, show their output, wait for them; returns the one exit status."""
    display.line("", f"workers: {len(plans)} on this machine (each a harness.study process on the same storage)")
    # Ctrl-C and a scheduler's SIGTERM both stop the workers cleanly; the handlers are set before the workers
    # start so that they inherit the default disposition (a shell's background job ignores SIGINT otherwise)
    previous = {sig: signal.signal(sig, signal.default_int_handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    procs = []
    for plan in plans:
        display.line("", f"  [w{plan.index}] {plan.device}")
        env = {**os.environ, **plan.env, "PYTHONUNBUFFERED": "1"}
        procs.append(
            subprocess.Popen(
                command,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # Ctrl-C reaches the supervisor alone; it passes it on once
            )
        )
    pumps = [
        threading.Thread(target=display.pump, args=(f"[w{plan.index}] ", proc.stdout), daemon=True)
        for plan, proc in zip(plans, procs, strict=True)
    ]
    for pump in pumps:
        pump.start()
    interrupted = False
    try:
        try:
            while any(proc.poll() is None for proc in procs):
                time.sleep(0.1)
        except KeyboardInterrupt:
            interrupted = True
            display.line("", "interrupted: stopping the workers (each records its running trial as interrupted)")
            _signal_all(procs, signal.SIGINT)
            deadline = time.monotonic() + STOP_GRACE_S
            try:
                while any(proc.poll() is None for proc in procs) and time.monotonic() < deadline:
                    time.sleep(0.1)
            except KeyboardInterrupt:
                display.line("", "interrupted again: killing the workers")
            _signal_all(procs, signal.SIGKILL)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        for proc in procs:
            proc.wait()
        for pump in pumps:
            pump.join(timeout=5)
    codes = [proc.returncode for proc in procs]
    if interrupted:
        display.line("", "interrupted: completed trials are kept; run the same command again to resume")
        return 130
    failed = [(plan, code) for plan, code in zip(plans, codes, strict=True) if code != 0]
    if not failed:
        display.line("", f"workers: all {len(plans)} finished")
        return 0
    for plan, code in failed:
        display.line("", f"workers: [w{plan.index}] ended with {describe_exit(code)}")
    display.line("", "workers: run the same command again to resume (trials of dead workers are run again)")
    return next((code for _, code in failed if code > 0), 1)


def _signal_all(procs: list[subprocess.Popen], sig: signal.Signals) -> None:
    for proc in procs:
        if proc.poll() is None:
            try:
                proc.send_signal(sig)
            except ProcessLookupError:
                pass
