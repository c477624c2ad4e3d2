"""One trial trained by one process against the same trial trained by K processes with DDP (torchrun).

A study's first cell (``--study``, default the default study; cosine, seed 0) with ``--preset`` at global batch
``--batch``, run once
by ``python -m harness.study`` and once by ``torchrun --standalone --nproc-per-node K -m harness.study``, each
into its own database; printed side by side: training images/s of the job and per device, the speed-up and
the scaling efficiency (speed-up / K), MFU, peak memory per device, and how far the DDP loss curve is from the
single process's (the same examples and noise; only the summation order differs, docs/scale.md).

Run on a GPU machine:  python3 bench/ddp.py --device cuda --study studies/gpu/schedule_shift.yaml --batch 256
                       --steps 300   (U-ViT base at 128 px)
A CPU smoke run:       .venv/bin/python bench/ddp.py --device cpu --procs 2 --preset tiny --batch 8 --steps 20
With one visible GPU, K = 1: only the single-process run is made (there is no DDP to compare) and it says so.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import yaml  # noqa: E402

from harness.store import Store  # noqa: E402

STUDY = ROOT / "studies" / "schedule_shift.yaml"


def run(procs: int, args: argparse.Namespace, folder: Path) -> tuple[str, float]:
    """Train the cell with ``procs`` processes; returns its database URL and the command's wall time."""
    url = f"sqlite:///{folder / f'ddp{procs}.db'}"
    sets = {
        "train.device": args.device,
        "train.batch_size": args.batch,
        "train.steps": args.steps,
        "train.checkpoint_every": 0,
        "train.log_every": max(1, args.steps // 20),
        "eval.num_samples": args.samples,
        "eval.metrics": "[swd, flops, throughput, memory, mfu]",
        "search.space.diffusion.schedule": "[{name: cosine}]",
        "search.space.train.seed": "[0]",
    }
    sets.update({"model.preset": args.preset} if args.preset else {})
    study = [str(args.study), "--storage", url, "--quiet"] + [f"--set={k}={v}" for k, v in sets.items()]
    if procs == 1:
        cmd = [sys.executable, "-m", "harness.study", *study]
    else:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={procs}"]
        cmd += ["-m", "harness.study", *study]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    start = time.perf_counter()
    done = subprocess.run(cmd, cwd=folder, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(cmd[:6])} ... failed ({done.returncode}):\n{done.stdout}\n{done.stderr[-4000:]}")
    return url, time.perf_counter() - start


def figures(url: str, study: str) -> dict:
    metrics = Store(url).metrics(study)
    scalar = metrics[metrics["step"].isna()].set_index("name")
    curve = metrics[metrics["name"] == "train_loss"].sort_values("step")
    attrs = json.loads(scalar.loc["train_images_per_s", "attrs_json"])
    return {
        "world_size": int(scalar.loc["world_size", "value"]),
        "per_device_batch": int(scalar.loc["per_device_batch_size", "value"]),
        "images_per_s": scalar.loc["train_images_per_s", "value"],
        "images_per_s_per_device": attrs.get("images_per_s_per_device"),
        "mfu": scalar.loc["mfu", "value"],
        "peak_memory_gb": scalar.loc["peak_memory_bytes", "value"] / 1e9,
        "device": attrs.get("device"),
        "curve": dict(zip(curve["step"].astype(int), curve["value"], strict=True)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", choices=["cuda", "cpu"], default="cuda")
    parser.add_argument("--procs", type=int, default=None, help="DDP processes (default: visible GPUs; CPU: 2)")
    parser.add_argument("--study", default=str(STUDY), help="study file (its first cell is trained)")
    parser.add_argument("--preset", default=None, help="network preset (default: the study's)")
    parser.add_argument("--batch", type=int, default=256, help="global batch (divided over the processes)")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--samples", type=int, default=64, help="eval.num_samples (evaluation is not compared)")
    args = parser.parse_args()
    if args.procs is None:
        import torch  # deferred: only to count the GPUs

        args.procs = torch.cuda.device_count() if args.device == "cuda" else 2
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        one_url, one_wall = run(1, args, folder)
        name = yaml.safe_load(Path(args.study).read_text())["name"]
        one = figures(one_url, name)
        print(f"{name}: {args.preset or 'its'} preset, global batch {args.batch}, {args.steps} steps, {one['device']}")
        rows = [("1 process", one, one_wall)]
        if args.procs > 1:
            many_url, many_wall = run(args.procs, args, folder)
            rows.append((f"DDP x {args.procs}", figures(many_url, name), many_wall))
        else:
            print("one device visible: DDP not run; the single-process figures only")
        print(
            f"{'':>10} {'batch/dev':>9} {'img/s job':>10} {'img/s dev':>10} {'MFU':>6} {'mem/dev GB':>10} {'wall s':>7}"
        )
        for label, f, wall in rows:
            per_device = f["images_per_s_per_device"] or f["images_per_s"]
            print(
                f"{label:>10} {f['per_device_batch']:>9} {f['images_per_s']:>10.1f} {per_device:>10.1f} "
                f"{f['mfu']:>6.3f} {f['peak_memory_gb']:>10.2f} {wall:>7.1f}"
            )
        if len(rows) > 1:
            many = rows[1][1]
            speedup = many["images_per_s"] / one["images_per_s"]
            print(f"speed-up x{speedup:.2f}, scaling efficiency {speedup / args.procs:.2f} (speed-up / {args.procs})")
            steps = sorted(set(one["curve"]) & set(many["curve"]))
            gaps = [abs(many["curve"][s] - one["curve"][s]) / abs(one["curve"][s]) for s in steps]
            print(f"loss curve: {len(steps)} points, largest relative difference {max(gaps):.2e} (summation order)")


if __name__ == "__main__":
    main()
