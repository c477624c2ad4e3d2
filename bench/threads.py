"""Training steps with 1 and 2 torch threads, OpenMP's default wait policy against the harness's, quiet and
while another process spins on a core: the collapse that ``harness.threads`` prevents, side by side.

    python bench/threads.py [--study studies/schedule_shift.yaml] [--steps 4] [--spinners 1]

Each configuration runs in a fresh process (OpenMP reads ``OMP_WAIT_POLICY`` when torch loads): the study's
first trial network and batch, ``--warmup`` + ``--steps`` steps of forward, backward and AdamW on the trial's
loss. "loaded" starts ``--spinners`` busy-looping processes first (ended after the run). Printed: median wall
time per step, the harness/default ratio, and the other processes' CPU load during the run. The harness's policy
(``OMP_WAIT_POLICY=PASSIVE``) is what ``python -m harness.study`` sets unless the user set one.
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

POLICIES = {"default": None, "harness (PASSIVE)": "PASSIVE"}
SPIN = "while True: pass"


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


def run_config(args: argparse.Namespace, threads: int, policy: str | None, spinners: int) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
    env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads), PYTHONPATH=str(ROOT))
    if policy:
        env["OMP_WAIT_POLICY"] = policy
    spin = [subprocess.Popen([sys.executable, "-c", SPIN]) for _ in range(spinners)]
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
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
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
        for name, policy in POLICIES.items():
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
        base, ours = table[threads, "default"], table[threads, "harness (PASSIVE)"]
        print(
            f"{threads} thread(s): harness policy speed-up over the default: "
            f"quiet x{base['quiet'] / ours['quiet']:.2f}, loaded x{base['loaded'] / ours['loaded']:.2f}"
        )


if __name__ == "__main__":
    main()
