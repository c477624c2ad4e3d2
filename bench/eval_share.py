"""How much of a default-study trial evaluation takes: the trial's phases timed, training extrapolated to the
study's steps.

    python bench/eval_share.py [--study studies/schedule_shift.yaml] [--steps 60] [--set KEY=VALUE ...]
    python bench/eval_share.py --dtypes auto bfloat16       # the default sampler, then bf16 sampling (opt-in on CPU)

Runs the study's first trial through the trial runner (``harness.trial.runner.run_trial``, as a study runs it)
with ``train.steps`` cut to ``--steps`` (``--steps 0``: the study's own), in a fresh results and cache folder,
and times its phases from the runner's events: set-up (dataset, network), training, validation loss, sampling,
metrics, calibration baselines. Evaluation is validation + sampling + metrics + calibration. The training time
is scaled to the study's ``train.steps`` (seconds per step of this run); evaluation does not depend on the
steps. The calibration baselines are computed once per held-out set and cached: the first trial of a study pays
them (the "miss" line), the others read them (the "hit" line: the same trial run again on the same cache).
Printed: seconds per phase, the evaluation share of a trial's time for a miss and a hit, and the load; with
``--dtypes``, that for each ``eval.sampler_dtype`` in turn.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from harness.threads import apply_wait_policy  # noqa: E402

apply_wait_policy()  # as python -m harness.study does, before torch loads

import torch  # noqa: E402

from harness.config import load_study  # noqa: E402
from harness.trial.events import TrialEvents  # noqa: E402
from harness.trial.runner import run_trial  # noqa: E402

EVAL_PHASES = ("validation", "sampling", "metrics", "calibration")


class PhaseClock(TrialEvents):
    """Wall time of each phase, from the runner's ``phase`` events to the next one (or ``stop``)."""

    def __init__(self) -> None:
        self.t0 = time.perf_counter()
        self.marks: list[tuple[str, float]] = [("setup", self.t0)]

    def phase(self, name: str, **info: Any) -> None:
        self.marks.append((name, time.perf_counter()))

    def stop(self) -> dict[str, float]:
        ends = [t for _, t in self.marks[1:]] + [time.perf_counter()]
        return {name: end - start for (name, start), end in zip(self.marks, ends, strict=True)}


def timed_trial(config, workdir: Path, cache: Path) -> tuple[dict[str, float], dict[str, Any]]:
    clock = PhaseClock()
    result = run_trial(config, workdir, cache, clock)
    metrics = {m["name"]: m for m in result.metrics if m.get("step") is None}
    return clock.stop(), metrics


def report(times_by_run: dict[str, dict[str, float]], scale: float, study_steps: int, label: str) -> None:
    """The phase table of one sampler setting (cache miss and hit) and its evaluation shares."""
    miss, hit = times_by_run["miss"], times_by_run["hit"]
    print(f"\n{label}\n{'phase':12} {'s (cache miss)':>15} {'s (cache hit)':>14}")
    for name in ("setup", "training", *EVAL_PHASES):
        print(f"{name:12} {miss.get(name, 0.0):>15.1f} {hit.get(name, 0.0):>14.1f}")
    for trial, times in (("first trial (calibration computed)", miss), ("later trials (calibration cached)", hit)):
        train_s = times["training"] * scale
        eval_s = sum(times.get(p, 0.0) for p in EVAL_PHASES)
        total = times["setup"] + train_s + eval_s
        print(
            f"{trial}: training {train_s:.0f} s ({study_steps} steps, extrapolated), evaluation {eval_s:.1f} s "
            f"(sampling {times.get('sampling', 0.0):.1f} s): evaluation share {eval_s / total:.1%}   (goal <= 25 %)"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--study", default=str(ROOT / "studies" / "schedule_shift.yaml"))
    parser.add_argument("--steps", type=int, default=60, help="training steps run (0: the study's own)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a study key")
    parser.add_argument(
        "--dtypes", nargs="+", default=["auto"], help="eval.sampler_dtype values to run, each its own trial pair"
    )
    args = parser.parse_args()
    loaded = load_study(args.study, args.set)
    full = loaded.trial_config(loaded.planned_cells()[0])
    study_steps = full.train.steps
    steps = args.steps or study_steps
    sets = [*args.set, f"train.steps={steps}", "train.checkpoint_every=0"]
    configs = {
        d: load_study(args.study, [*sets, f"eval.sampler_dtype={d}"]).trial_config(loaded.planned_cells()[0])
        for d in args.dtypes
    }
    config = configs[args.dtypes[0]]
    ev = config.eval
    print(
        f"# {Path(args.study).name} trial 0: {config.model.name} {config.model.preset}, {config.resolution} px, "
        f"batch {config.train.batch_size}, {steps} of {study_steps} steps run; eval {ev.num_samples} samples, "
        f"{ev.sampler.to_spec()}, metrics {[m.name for m in ev.metrics]}; {torch.get_num_threads()} torch threads, "
        f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY')}, GOMP_SPINCOUNT={os.environ.get('GOMP_SPINCOUNT')}, "
        f"load average {os.getloadavg()[0]:.1f}"
    )
    loads = []
    for dtype, config in configs.items():
        times: dict[str, dict[str, float]] = {}
        with tempfile.TemporaryDirectory() as tmp:
            times["miss"], metrics = timed_trial(config, Path(tmp) / "a", Path(tmp) / "cache")
            times["hit"], _ = timed_trial(config, Path(tmp) / "b", Path(tmp) / "cache")  # calibration cached now
        loads.append(metrics.get("train_images_per_s", {}).get("attrs", {}).get("other_load_cores"))
        applied = metrics.get("sample_images_per_s", {}).get("attrs", {}).get("sampler_dtype")
        report(times, study_steps / steps, study_steps, f"## eval.sampler_dtype={dtype} (sampled in {applied})")
    print(f"\n(other processes' load while training, by run: {loads} cores)")


if __name__ == "__main__":
    main()
