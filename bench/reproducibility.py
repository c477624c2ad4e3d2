"""Same study, same seed, same numbers: run a study twice into two databases, and a third time killed
(SIGKILL) mid-checkpoint and mid-metric-write and resumed; compare every metric but the machine's
measurements (``harness.reproducibility``).

    python bench/reproducibility.py studies/schedule_shift.yaml [--set train.steps=60 ...] [--out DIR]

Prints one line per run and per comparison; exit 0 when all three runs agree bit for bit. Every run uses
the same thread count (``OMP_NUM_THREADS``, default 1 here): bit-identity holds per machine and thread
count. The kills use the fault points of ``harness.faults``: the first trial dies while writing the
checkpoint of ``--kill-at-step`` (default: the second checkpoint), the rerun's first trial dies while
its metric rows are being written, and a third run finishes the study.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from harness.config import load_study
from harness.report.reproducibility import comparable_metrics, differences
from harness.store import Store

ROOT = Path(__file__).resolve().parent.parent


def run(study: str, sets: list[str], db: Path, fault: str | None = None) -> tuple[int, float, str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    env.pop("HARNESS_FAULT", None)
    if fault:
        env["HARNESS_FAULT"] = fault
    cmd = [sys.executable, "-m", "harness.study", study, "--storage", f"sqlite:///{db}", "--quiet"]
    cmd += [arg for s in sets for arg in ("--set", s)]
    t0 = time.perf_counter()
    done = subprocess.run(cmd, cwd=db.parent, env=env, capture_output=True, text=True)
    if done.returncode not in (0, -9):
        sys.exit(f"{' '.join(cmd)} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    return done.returncode, time.perf_counter() - t0, done.stderr


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("study")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--kill-at-step", type=int, help="step whose checkpoint write is killed")
    parser.add_argument("--out", help="folder for the three databases (default: a temporary one)")
    args = parser.parse_args()
    args.study = str(Path(args.study).resolve())  # the runs start in their database's folder
    loaded = load_study(args.study, args.set)
    train = loaded.base.train
    step = args.kill_at_step or 2 * (train.checkpoint_every or train.steps)
    out = Path(args.out or tempfile.mkdtemp(prefix="reproducibility-"))
    dbs = {}
    for name in ("first", "second", "killed"):
        (out / name).mkdir(parents=True, exist_ok=True)
        dbs[name] = out / name / "h.db"
    for name in ("first", "second"):
        code, seconds, _ = run(args.study, args.set, dbs[name])
        print(f"{name} run: exit {code}, {seconds:.1f} s -> {dbs[name]}")
    for fault in (f"checkpoint_write:step={step}", "metrics_write", None):
        code, seconds, _ = run(args.study, args.set, dbs["killed"], fault)
        what = f"killed at {fault}" if code == -9 else f"finished{' (the fault never came)' if fault else ''}"
        print(f"killed run: {what}, exit {code}, {seconds:.1f} s")
    metrics = {name: comparable_metrics(Store(f"sqlite:///{db}"), loaded.name) for name, db in dbs.items()}
    resumed = Store(f"sqlite:///{dbs['killed']}").metrics(loaded.name)
    resumed = sorted(int(v) for v in resumed[resumed["name"] == "resumed_from_step"]["value"] if v)
    print(f"killed run: trials resumed from steps {resumed}")
    values = sum(len(v) for v in metrics["first"].values())
    status = 0
    for other in ("second", "killed"):
        diff = differences(metrics["first"], metrics[other])
        verdict = "identical" if not diff else f"{len(diff)} differences"
        print(f"first vs {other}: {len(metrics[other])} cells, {values} values compared: {verdict}")
        for line in diff[:10]:
            print(f"  {line}")
        status |= bool(diff)
    return status


if __name__ == "__main__":
    sys.exit(main())
