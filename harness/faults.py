"""Named points where the fault-injection tests kill a worker: inert unless ``HARNESS_FAULT`` is set.

The trial bookkeeping has a few places where a crash leaves half-done work behind; each calls
``point(NAME, **context)``. ``HARNESS_FAULT`` lists faults separated by ``;``, each ``NAME`` or
``NAME:KEY=VALUE`` (the context's KEY must equal VALUE). At the first matching point the process prints
``fault: NAME`` on stderr and sends itself SIGKILL: no ``finally``, no ``atexit``, no rollback of its own,
exactly like ``kill -9`` or a machine that loses power at that instant. Points (see tests/test_faults.py):

- ``before_claim``: Optuna marked the trial RUNNING; nothing of it is in the harness tables yet.
- ``after_claim``: the harness claimed the grid cell and wrote the trial's ``running`` row.
- ``checkpoint_write``: a checkpoint is written to its temporary file but not yet renamed (context: step).
- ``metrics_write``: the trial's metric rows are inserted, the transaction is not yet committed.
- ``before_tell``: the harness committed the trial ``complete``; Optuna does not know yet.

Context keys: ``trial`` (the trial number) and ``cell`` (``key=label,...`` of the searched values, keys
sorted), e.g. ``HARNESS_FAULT="before_tell:cell=diffusion.loss=mse,train.seed=3"``.
"""

from __future__ import annotations

import os
import signal
import sys

POINTS = ("before_claim", "after_claim", "checkpoint_write", "metrics_write", "before_tell")


def _matches(fault: str, name: str, context: dict[str, object]) -> bool:
    point_name, _, condition = fault.strip().partition(":")
    if point_name != name:
        return False
    if not condition:
        return True
    key, _, value = condition.partition("=")
    return key in context and str(context[key]) == value


def point(name: str, **context: object) -> None:
    """Kill this process here when ``HARNESS_FAULT`` asks for it; otherwise do nothing."""
    spec = os.environ.get("HARNESS_FAULT")
    if not spec:
        return
    if any(_matches(fault, name, context) for fault in spec.split(";")):
        print(f"fault: {name}", file=sys.stderr, flush=True)
        os.kill(os.getpid(), signal.SIGKILL)


def cell_text(labels: dict[str, object]) -> str:
    """The ``cell`` context of a trial: ``key=label,...`` with the keys sorted."""
    return ",".join(f"{key}={labels[key]}" for key in sorted(labels))
