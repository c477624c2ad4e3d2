"""Smoke runs of the speed benches at tiny sizes (what they print is checked, never a time): they must run
where CI runs, and what they compare must be comparable."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def bench(script: str, *args: str, timeout: float = 300) -> str:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / script), *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def test_train_loop_bench_runs_the_harness_and_a_bare_loop_to_the_same_weights_and_prints_mfu():
    """The bare loop is the harness loop's arithmetic without its bookkeeping: from one seed both end on
    bit-identical weights and EMA (so the ratio compares equal work); the MFU lines exist for both loops."""
    out = bench(
        "train_loop.py",
        *("--preset", "tiny", "--resolution", "16", "--batch", "4", "--steps", "4", "--images", "16"),
        *("--rounds", "1", "--warmup-rounds", "0", "--peak-budget-s", "0.02"),
    )
    assert "weights and EMA after the first round bit-identical: yes (max |diff| 0)" in out
    assert re.search(r"harness/bare speed, CPU time: +\d+\.\d+", out)
    for loop in ("harness", "bare"):
        assert re.search(rf"^{loop} +images/s +\d+\.\d+ .* MFU \d+\.\d+", out, re.M), out


def test_eval_share_bench_times_every_phase_of_a_trial_and_prints_the_share(tmp_path: Path):
    """One small trial of the default study, run twice on one cache (calibration computed, then cached): every
    phase timed for both, and the share printed for both."""
    small = ("dataset.num_images=64", "eval.num_samples=8", "eval.sampler.steps=4", "model.preset=tiny")
    out = bench("eval_share.py", "--steps", "2", *(a for s in small for a in ("--set", s)))
    for phase in ("setup", "training", "validation", "sampling", "metrics", "calibration"):
        assert re.search(rf"^{phase} +\d+\.\d +\d+\.\d$", out, re.M), out
    for label in ("first trial", "later trials"):
        assert re.search(rf"^{label} .* evaluation share \d+\.\d%", out, re.M), out


def test_peer_bench_says_it_skipped_when_the_peer_is_not_installed(tmp_path: Path):
    out = bench("peer_uvit.py", "--peer", str(tmp_path / "absent"))
    assert out.startswith("skipped: the peer is not installed under")


def test_scaling_bench_prints_time_and_flop_ratios_from_128_to_256_px():
    out = bench("scaling.py", *("--networks", "uvit", "--stems", "none", "--preset", "tiny", "--rounds", "1"))
    number = r" +([\d.]+)"
    row = re.search(rf"^uvit +none +this +contiguous{number * 7}$", out, re.M)
    assert row, out
    gflop_128, gflop_256, flop_ratio = float(row[1]), float(row[2]), float(row[6])
    assert flop_ratio == pytest.approx(gflop_256 / gflop_128, abs=0.01)  # the FLOP ratio printed is the FLOPs'
    assert gflop_256 > gflop_128  # 4x the pixels: more FLOPs per image


def test_threads_bench_runs_each_policy_quiet_and_loaded():
    """Every configuration runs in its own process, with and without the competing process; the table has a
    row per (threads, policy) and the speed-up line names each policy against the default."""
    args = ("--threads", "1", "--policies", "default", "harness", "--steps", "1", "--warmup", "0", "--load", "python")
    out = bench("threads.py", *args)
    for policy in ("default", "harness"):
        assert re.search(rf"^ +1 {policy} +\d+\.\d+ +\d+\.\d+ +\d+\.\d+ +\d+\.\d+$", out, re.M), out
    assert re.search(
        r"^1 thread\(s\), speed-up over the default: harness: quiet x\d+\.\d+ loaded x\d+\.\d+$", out, re.M
    )
