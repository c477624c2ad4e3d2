"""The OpenMP wait policy (``harness.threads``): set before torch loads, a user's choice kept, passed on to child
processes, recorded with the trial. (How much it saves under load is bench/threads.py's job, not a test's.)"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from harness.environment import environment
from harness.threads import CHOSEN_BY, apply_wait_policy

ROOT = Path(__file__).resolve().parents[1]


def test_the_harness_bounds_the_spinning_unless_the_user_chose():
    env: dict[str, str] = {}
    assert apply_wait_policy(env) == "harness"
    assert env == {"GOMP_SPINCOUNT": "10000", CHOSEN_BY: "harness"}
    for key, value in (("OMP_WAIT_POLICY", "PASSIVE"), ("GOMP_SPINCOUNT", "100000")):
        env = {key: value}
        assert apply_wait_policy(env) == "user"
        assert env == {key: value, CHOSEN_BY: "user"}  # the user's setting untouched, nothing added


def test_a_child_process_keeps_what_its_parent_decided():
    """A worker or torchrun rank inherits the parent's environment: the policy stays the parent's decision
    (not re-read as a user's choice because the variable is now set)."""
    parent: dict[str, str] = {}
    apply_wait_policy(parent)
    child = dict(parent)
    assert apply_wait_policy(child) == "harness" and child == parent


PROBE = """import os, runpy, sys
sys.argv = ["harness.study", "studies/schedule_shift.yaml", "--dry-run"]
try:
    runpy.run_module("harness.study", run_name="__main__")
except SystemExit:
    pass
import torch
from harness.environment import environment
print("ENV", __import__("json").dumps(environment(torch.device("cpu"))), file=sys.stderr)
"""


@pytest.mark.parametrize("user", [None, "PASSIVE"])
def test_the_study_command_sets_the_policy_before_torch_and_the_trial_records_it(user: str | None):
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", CHOSEN_BY)}
    if user:
        env["OMP_WAIT_POLICY"] = user
    done = subprocess.run(
        [sys.executable, "-c", PROBE], cwd=ROOT, env=env, capture_output=True, text=True, check=True, timeout=300
    )
    line = next(ln for ln in done.stderr.splitlines() if ln.startswith("ENV "))
    recorded = json.loads(line.removeprefix("ENV "))
    assert recorded["omp_wait_policy"] == user
    assert recorded["gomp_spincount"] == (None if user else "10000")
    assert recorded["wait_policy_by"] == ("user" if user else "harness")
    assert recorded["torch_threads"] >= 1


def test_too_late_changes_nothing_and_says_so(monkeypatch: pytest.MonkeyPatch):
    """In a process where torch is loaded already (here: pytest's), OpenMP has read its settings: the call must not
    pretend to have set a policy."""
    for key in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", CHOSEN_BY):
        monkeypatch.delenv(key, raising=False)
    assert "torch" in sys.modules
    assert apply_wait_policy() == "unset"
    assert "OMP_WAIT_POLICY" not in os.environ and "GOMP_SPINCOUNT" not in os.environ
    assert environment(torch.device("cpu"))["wait_policy_by"] == "unset"
