"""How the CPU threads wait: a bounded OpenMP spin that neither collapses under load nor slows a quiet machine.

PyTorch's CPU kernels run on an OpenMP thread pool (libgomp in the Linux pip wheels). By default a thread that
reaches a barrier first spins 300,000 times before it sleeps: on a quiet machine that saves a wake-up, but when
another process holds one of the cores (worse: another torch job spinning the same way), the spinning threads
burn the time slices the late thread needs, and every parallel region waits a slice. ``bench/threads.py``
(docs/speed.md) measured, for a training step with 2 threads on 2 cores:

- quiet: default 0.13-0.15 s, ``GOMP_SPINCOUNT=10000`` the same, ``OMP_WAIT_POLICY=PASSIVE`` 0.20 s (1.4x
  slower: every barrier sleeps and wakes);
- beside another 2-thread torch job: default 1.3-2.2 s (collapsed), spin 10000 0.40-0.49 s, PASSIVE 0.30 s.

So the command lines that compute set ``GOMP_SPINCOUNT=10000`` (``DEFAULT_POLICY``) first thing, before torch
is imported (libgomp reads it when it is loaded): ``harness/study.py``, ``harness/prepare.py``.

What a user sets wins: ``OMP_WAIT_POLICY`` (``PASSIVE`` on a machine that is always shared, ``ACTIVE`` on a
dedicated one) or ``GOMP_SPINCOUNT`` in the environment is left alone, as is ``OMP_NUM_THREADS`` (the torch
thread count; ``--workers`` divides the cores among its workers unless it is set). Intel's OpenMP runtime
(some conda builds) reads ``KMP_BLOCKTIME`` instead, which is left as it is (not measured here).
``thread_policy()`` is what a trial records (``env_json``: the settings and who chose them).

Torch-free on purpose: it must run before torch is imported.
"""

from __future__ import annotations

import os
import sys
from collections.abc import MutableMapping
from typing import Any

DEFAULT_POLICY = {"GOMP_SPINCOUNT": "10000"}  # spin about as long as a wake-up costs, then sleep
USER_KEYS = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")  # either one set by the user: the harness changes nothing
CHOSEN_BY = "HARNESS_OMP_WAIT_POLICY_BY"  # who set the policy, passed on to workers and torchrun ranks


def apply_wait_policy(environ: MutableMapping[str, str] | None = None) -> str:
    """Set ``DEFAULT_POLICY`` in ``environ`` (default ``os.environ``) unless the user chose a wait policy;
    returns who chose it (``harness`` or ``user``; ``unset`` when torch is imported already, so that the policy
    could no longer take effect in this process). Child processes (workers, ranks) inherit both."""
    env = os.environ if environ is None else environ
    if env.get(CHOSEN_BY) in ("harness", "user"):  # a parent harness process decided already
        return env[CHOSEN_BY]
    if any(env.get(key) for key in USER_KEYS):
        env[CHOSEN_BY] = "user"
    elif "torch" in sys.modules and environ is None:  # too late: OpenMP read its settings when torch loaded
        return "unset"
    else:
        env.update(DEFAULT_POLICY)
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
