"""Provenance of a trial: host, process, device, versions, git revision."""

from __future__ import annotations

import os
import platform
import socket
import subprocess
from functools import lru_cache
from pathlib import Path
from typing import Any

import torch

from harness.threads import thread_policy

PROJECT_ROOT = Path(__file__).resolve().parent.parent


@lru_cache(maxsize=1)
def git_revision() -> str | None:
    """HEAD of the project's checkout, with ``-dirty`` when tracked files differ; None outside git."""
    try:
        rev = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=5, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=PROJECT_ROOT,
            capture_output=True,
            text=True,
            timeout=5,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return f"{rev}-dirty" if dirty else rev


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({platform.processor() or platform.machine()}, {os.cpu_count()} cores)"


def environment(device: torch.device) -> dict[str, Any]:
    return {
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "device": device_name(device),
        "torch_version": torch.__version__,
        "cuda_version": torch.version.cuda if device.type == "cuda" else None,
        "git_revision": git_revision(),
        "python_version": platform.python_version(),
        "platform": platform.platform(),
        "torch_threads": torch.get_num_threads(),
        **thread_policy(),  # OMP_NUM_THREADS, the OpenMP wait policy and who chose it (harness.threads)
        "worker": os.environ.get("HARNESS_WORKER"),  # its index under --workers (harness.cli.workers)
        "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),  # the device --workers pinned it to
    }


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
