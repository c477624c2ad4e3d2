"""How the CPU threads wait: an OpenMP wait policy that does not collapse when other processes share the cores.

PyTorch's CPU kernels run on an OpenMP thread pool (libgomp in the Linux wheels). By default its threads spin
at every barrier for a while before they sleep: on a quiet machine that saves a wake-up, but when another
process holds one of the cores, the threads that arrived first burn their core spinning while the one they
wait for is descheduled, and every parallel region takes a time slice. Measured on a 2-core machine with one
core busy elsewhere (``bench/threads.py``, docs/speed.md): a training step with 2 threads took 9.1 s with the
default policy, 0.67 s with ``PASSIVE`` (0.73 s with 1 thread).
``OMP_WAIT_POLICY=PASSIVE`` makes waiting threads sleep at once; libgomp reads it when it is loaded, that is
when torch is imported, so the command lines that compute call ``apply_wait_policy`` first thing
(``harness/study.py``, ``harness/prepare.py``).

What a user sets wins: ``OMP_WAIT_POLICY`` or ``GOMP_SPINCOUNT`` in the environment (e.g.
``OMP_WAIT_POLICY=ACTIVE`` on a dedicated machine) is left alone, as is ``OMP_NUM_THREADS`` (the torch thread
count; ``--workers`` divides the cores among its workers unless it is set). ``thread_policy()`` is what a
trial records (``env_json``: the policy, who chose it, the thread count).

Torch-free on purpose: it must run before torch is imported.
"""

from __future__ import annotations

import os
import sys
from collections.abc import MutableMapping
from typing import Any

DEFAULT_WAIT_POLICY = "PASSIVE"
USER_KEYS = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")  # either one set by the user: the harness changes nothing
CHOSEN_BY = "HARNESS_OMP_WAIT_POLICY_BY"  # who set the policy, passed on to workers and torchrun ranks


def apply_wait_policy(environ: MutableMapping[str, str] | None = None) -> str:
    """Set ``OMP_WAIT_POLICY=PASSIVE`` in ``environ`` (default ``os.environ``) unless the user chose a wait
    policy; returns who chose it (``harness`` or ``user``; ``unset`` when torch is imported already, so that
    the policy could no longer take effect in this process). Child processes (workers, ranks) inherit both."""
    env = os.environ if environ is None else environ
    if env.get(CHOSEN_BY) in ("harness", "user"):  # a parent harness process decided already
        return env[CHOSEN_BY]
    if any(env.get(key) for key in USER_KEYS):
        env[CHOSEN_BY] = "user"
    elif "torch" in sys.modules and environ is None:  # too late: OpenMP read its settings when torch loaded
        return "unset"
    else:
        env["OMP_WAIT_POLICY"] = DEFAULT_WAIT_POLICY
        env[CHOSEN_BY] = "harness"
    return env[CHOSEN_BY]


def thread_policy() -> dict[str, Any]:
    """The thread settings this process computes under, for the trial's provenance: the torch thread count,
    the OpenMP wait policy and spin count in force, and who chose them (``harness``, ``user``, or ``unset``
    when no harness command line applied the policy, e.g. a library call)."""
    torch = sys.modules.get("torch")
    chosen = os.environ.get(CHOSEN_BY, "unset")
    return {
        "torch_threads": torch.get_num_threads() if torch is not None else None,
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
        "gomp_spincount": os.environ.get("GOMP_SPINCOUNT"),
        "wait_policy_by": chosen,
    }
