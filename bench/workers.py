"""Trials per hour with ``--workers N`` against one worker, on the same small grid, in one run.

Each configuration runs the whole grid into a fresh SQLite database with ``python -m harness.study STUDY
--workers N``, timed from the command's start to its exit (start-up included: it is what a user waits for).
Configurations alternate over ``--rounds`` rounds so that a change in the machine's load hits them alike;
every run prints its wall time, the CPU time its processes used and the CPU time other processes used
meanwhile (cores' worth: more than the cores left spare means the figure was taken under load).

Run:  .venv/bin/python bench/workers.py [--workers 1 2] [--threads 1] [--cells 6] [--steps 100] [--rounds 2]

``--threads 1`` gives every worker one torch thread (``OMP_NUM_THREADS=1``), so that N workers on N cores are
compared with one worker on one core; ``--threads 0`` lets ``--workers`` share the cores out (cores // N each),
which is the comparison a user of ``--workers 1`` (all cores to one trial) makes.
"""

from __future__ import annotations

import argparse
import functools
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[1]
print = functools.partial(print, flush=True)  # noqa: A001 - each line as soon as it is measured

STUDY = """
name: bench_workers
seed: 0
dataset: {{name: shapes, resolution: 32, num_images: 256}}
model: {{name: uvit, preset: tiny, stem: {{name: wavelet, levels: 1}}}}
diffusion: {{schedule: {{name: cosine}}, loss: mse}}
train: {{steps: {steps}, batch_size: 16, warmup_steps: 10, log_every: 10, checkpoint_every: 0, device: cpu}}
eval: {{num_samples: 32, batch_size: 32, grid_size: 16, sampler: {{name: ddim, steps: 8}}, metrics: [swd, flops]}}
search: {{sampler: grid, space: {{train.seed: {seeds}}}}}
objectives: [{{metric: val_loss, direction: minimize}}]
"""


def children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def system_cpu_s() -> float:
    t = psutil.cpu_times()
    return t.user + t.system + getattr(t, "nice", 0.0) + getattr(t, "irq", 0.0) + getattr(t, "softirq", 0.0)


def run_once(study: Path, workers: int, threads: int, cache: Path) -> dict[str, float]:
    """One whole grid with ``--workers workers``; wall time, our CPU time, other processes' CPU load."""
    with tempfile.TemporaryDirectory(dir=study.parent) as folder:
        env = {**os.environ, "PYTHONPATH": str(ROOT), "HARNESS_CACHE_DIR": str(cache)}
        env.pop("OMP_NUM_THREADS", None)
        if threads:
            env["OMP_NUM_THREADS"] = str(threads)
        cmd = [sys.executable, "-m", "harness.study", str(study), "--quiet", "--workers", str(workers)]
        cmd += ["--storage", f"sqlite:///{folder}/bench.db"]
        cpu0, sys0, wall0 = children_cpu_s(), system_cpu_s(), time.perf_counter()
        done = subprocess.run(cmd, cwd=folder, env=env, capture_output=True, text=True)
        wall = time.perf_counter() - wall0
        ours = children_cpu_s() - cpu0
        other = max(0.0, (system_cpu_s() - sys0) - ours) / wall
        if done.returncode != 0:
            raise SystemExit(f"--workers {workers} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    return {"wall_s": wall, "cpu_s": ours, "other_load_cores": other}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--threads", type=int, default=1, help="torch threads per worker; 0: cores // workers")
    parser.add_argument("--cells", type=int, default=6, help="grid cells (trials)")
    parser.add_argument("--steps", type=int, default=100, help="training steps per trial")
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    cores = len(os.sched_getaffinity(0))
    with tempfile.TemporaryDirectory() as tmp:
        study = Path(tmp) / "bench_workers.yaml"
        study.write_text(STUDY.format(steps=args.steps, seeds=list(range(args.cells))))
        cache = Path(tmp) / "cache"
        run_once(study, 1, 1, cache)  # warm-up: the dataset cache and the peak-FLOP/s cache are filled once
        print(f"grid: {args.cells} trials (uvit tiny, 32 px, {args.steps} steps at batch 16); {cores} usable cores")
        print(f"threads per worker: {args.threads or 'cores // workers'}; rounds: {args.rounds}, alternating")
        print(f"{'round':>5} {'workers':>7} {'wall s':>8} {'trials/h':>9} {'CPU s':>7} {'other load':>10}")
        results: dict[int, list[dict[str, float]]] = {n: [] for n in args.workers}
        for r in range(args.rounds):
            for n in args.workers:
                m = run_once(study, n, args.threads, cache)
                results[n].append(m)
                rate = args.cells / m["wall_s"] * 3600
                spare = max(0, cores - n * (args.threads or max(1, cores // n)))
                mark = " (under load)" if m["other_load_cores"] > spare + 0.25 else ""
                load = f"{m['other_load_cores']:>9.2f}c{mark}"
                print(f"{r:>5} {n:>7} {m['wall_s']:>8.1f} {rate:>9.0f} {m['cpu_s']:>7.1f} {load}")
        base = args.workers[0]
        print(f"\nmedian trials per hour, and the ratio to --workers {base}:")
        rates = {n: statistics.median(args.cells / m["wall_s"] * 3600 for m in ms) for n, ms in results.items()}
        for n, rate in rates.items():
            ratios = [b["wall_s"] / m["wall_s"] for b, m in zip(results[base], results[n], strict=True)]
            spread = f"{min(ratios):.2f}-{max(ratios):.2f}" if len(ratios) > 1 else f"{ratios[0]:.2f}"
            print(f"  --workers {n}: {rate:7.0f} trials/h  x{rates[n] / rates[base]:.2f} (per round {spread})")


if __name__ == "__main__":
    main()
