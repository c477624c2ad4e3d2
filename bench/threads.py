"""Training steps with 1 and 2 torch threads under OpenMP wait policies, quiet and beside another busy process:
the collapse that ``harness.threads`` prevents, and what each policy costs on a quiet machine, side by side.

    python bench/threads.py [--steps 3] [--threads 1 2] [--load torch|python] [--spinners 1] [--policies ...]

Each configuration runs in a fresh process (OpenMP reads ``OMP_WAIT_POLICY`` / ``GOMP_SPINCOUNT`` when torch
loads): the default study's first trial network and batch, ``--warmup`` + ``--steps`` steps of forward, backward
and AdamW on the trial's loss. "loaded" starts ``--spinners`` processes first (ended after the run): ``torch``,
a 2-thread torch job with OpenMP's defaults (another study, worker or benchmark on the same cores), or
``python``, one busy core. Policies: ``default`` (libgomp spins 300,000 times at a barrier), ``PASSIVE``
(sleeps at once), ``harness`` (``harness.threads.DEFAULT_POLICY``, what ``python -m harness.study`` sets unless
the user chose), ``spin N`` (``GOMP_SPINCOUNT=N``). Printed: median wall time per step, the other processes'
CPU load during the run, and each policy's speed-up over the default.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from harness.threads import DEFAULT_POLICY  # noqa: E402  (torch-free: the parent never loads torch)

POLICIES = {  # name: the environment a configuration runs with (OMP_WAIT_POLICY / GOMP_SPINCOUNT)
    "default": {},
    "PASSIVE": {"OMP_WAIT_POLICY": "PASSIVE"},
    "harness": DEFAULT_POLICY,
    **{f"spin {n}": {"GOMP_SPINCOUNT": str(n)} for n in (1000, 3000, 10000, 30000, 100000)},
}
LOADS = {  # what the "loaded" columns run beside the measured process
    "python": "while True: pass",  # one busy core
    # another torch job with 2 threads and OpenMP's default (spinning) policy: what a second study, another
    # worker or someone's benchmark on the same cores does
    "torch": "import torch\ntorch.set_num_threads(2)\nx = torch.randn(64, 64)\nwhile True: x = torch.tanh(x @ x)",
}


def child(args: argparse.Namespace) -> None:
    """One configuration, in this process: print {"step_s": [...], "other_load": cores} as JSON."""
    import torch  # after the parent set OMP_WAIT_POLICY / OMP_NUM_THREADS for this process

    from harness.config import load_study
    from harness.metrics.perf import LoadMeter
    from harness.trial.runner import build_denoiser

    loaded = load_study(args.study, [])
    config = loaded.trial_config(loaded.planned_cells()[0])
    torch.manual_seed(0)
    denoiser = build_denoiser(config, 0, torch.device("cpu"))
    res, batch = config.resolution, config.train.batch_size
    opt = torch.optim.AdamW(denoiser.network.parameters(), lr=1e-4)
    x = torch.rand(batch, 3, res, res) * 2 - 1
    times, meter = [], None
    for i in range(args.warmup + args.steps):
        if i == args.warmup:
            meter = LoadMeter()
        start = time.perf_counter()
        loss = denoiser.loss(x).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        times.append(time.perf_counter() - start)
    load = meter.stats("train")["train_other_load_cores"] if meter else None
    print(json.dumps({"step_s": times[args.warmup :], "other_load": load, "threads": torch.get_num_threads()}))


def run_config(args: argparse.Namespace, threads: int, policy: dict[str, str], spinners: int) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
    env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads), PYTHONPATH=str(ROOT))
    env.update(policy)
    # the load runs with OpenMP's defaults (2 threads, spinning), whatever the measured configuration uses
    load_env = {k: v for k, v in env.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", *policy)}
    spin = [subprocess.Popen([sys.executable, "-c", LOADS[args.load]], env=load_env) for _ in range(spinners)]
    try:
        done = subprocess.run(
            [sys.executable, __file__, "--child", "--study", args.study, "--steps", str(args.steps)]
            + ["--warmup", str(args.warmup)],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        )
    finally:
        for p in spin:  # the spinners this run started, by their own handles
            p.kill()
            p.wait()
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--study", default=str(ROOT / "studies" / "schedule_shift.yaml"))
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--spinners", type=int, default=1, help="busy processes for the 'loaded' columns")
    parser.add_argument("--load", default="torch", choices=list(LOADS), help="what each busy process runs")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument(
        "--policies", nargs="+", default=["default", "PASSIVE", "harness"], choices=list(POLICIES), metavar="NAME"
    )
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return
    print(
        f"# {Path(args.study).name}: first trial's network and batch, {args.steps} steps (+{args.warmup} warm-up) "
        f"per run, {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}; loaded = {args.spinners} "
        "spinning process(es)"
    )
    print(
        f"{'threads':>7} {'wait policy':18} {'quiet s/step':>13} {'(other load)':>12} {'loaded s/step':>14} "
        f"{'(other load)':>12}"
    )
    table: dict[tuple[int, str], dict[str, float]] = {}
    for threads in args.threads:
        for name, policy in ((n, POLICIES[n]) for n in args.policies):
            row = {}
            for label, spinners in (("quiet", 0), ("loaded", args.spinners)):
                out = run_config(args, threads, policy, spinners)
                row[label] = statistics.median(out["step_s"])
                row[label + "_load"] = out["other_load"]
            table[threads, name] = row
            print(
                f"{threads:>7} {name:18} {row['quiet']:>13.3f} {row['quiet_load']:>12.2f} {row['loaded']:>14.3f} "
                f"{row['loaded_load']:>12.2f}",
                flush=True,
            )
    for threads in args.threads:
        base = table[threads, "default"]
        ratios = ", ".join(
            f"{name}: quiet x{base['quiet'] / row['quiet']:.2f} loaded x{base['loaded'] / row['loaded']:.2f}"
            for (t, name), row in table.items()
            if t == threads and name != "default"
        )
        print(f"{threads} thread(s), speed-up over the default: {ratios}")


if __name__ == "__main__":
    main()
