"""The harness's training loop against a bare PyTorch loop doing the same arithmetic, run interleaved.

    python bench/train_loop.py [--study studies/schedule_shift.yaml] [--rounds 7] [--steps 30] [--threads 1]
    python bench/train_loop.py --device cuda --preset base --batch 256 [--compile]      # MFU on a GPU

Both loops train the study's first trial network (``--preset`` / ``--resolution`` / ``--batch`` override it) on
random uint8 images from the same seed: same network, batch, data indices, noise, loss, AdamW with warm-up, relative
gradient clipping and EMA of weights. The bare loop is that and nothing else: no checks, no meters, no curve, no
checkpoints, no progress bar. Rounds alternate the two loops (fresh network and optimiser each round, the first
``--warmup-rounds`` of each discarded) so that load and thermal drift hit both alike. Printed per loop: CPU time per
step (``time.process_time``, all of the process's threads: robust to other processes' load), wall time per step,
and the harness/bare ratio of speeds (bare time / harness time; 1.0 = no overhead) with its median and min-max over
the rounds' pairs. The first round's final weights of both loops are compared (bit-identical on the CPU: the
same arithmetic).

MFU (model FLOPs utilisation) is printed for both loops: 3 x forward FLOPs per image (fvcore, the harness's
``flops`` metric) x images/s over the peak FLOP/s of a large matrix product measured here
(``harness.metrics.perf.measure_peak_flops``; bf16 on CUDA as the harness trains there, fp32 on the CPU). Issue 12's
goal: MFU >= 0.45 for the U-ViT ``base`` preset at a batch that fills the device. The harness's own recorded
``train_images_per_s`` (steady steps, per-step timing) gives the MFU the ``mfu`` metric would record.
"""

from __future__ import annotations

import argparse
import copy
import math
import os
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from harness.config import load_study  # noqa: E402
from harness.metrics.flops import count_flops  # noqa: E402
from harness.metrics.perf import measure_peak_flops  # noqa: E402
from harness.trial.recipes import recipe  # noqa: E402
from harness.trial.runner import build_denoiser  # noqa: E402
from harness.trial.train import GradClip, noise_seed, train  # noqa: E402

SEED = 1234


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bare_loop(denoiser, images: torch.Tensor, cfg, lr: float, warmup: int, device: torch.device) -> torch.nn.Module:
    """``cfg.steps`` optimiser steps in plain PyTorch, the arithmetic of ``harness.trial.train.train``; the EMA."""
    network = denoiser.network
    params = list(network.parameters())
    opt = torch.optim.AdamW(
        params, lr=lr, betas=tuple(cfg.betas), weight_decay=cfg.weight_decay, fused=device.type == "cuda"
    )
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / warmup) if warmup else 1.0)
    ema = copy.deepcopy(network).eval().requires_grad_(False)
    ema_params, ema_buffers, buffers = list(ema.parameters()), list(ema.buffers()), list(network.buffers())
    data_gen = torch.Generator(device="cpu").manual_seed(SEED)
    noise_gen = torch.Generator(device=device).manual_seed(noise_seed(SEED))
    torch.manual_seed(SEED)
    decay_gn, norm_ema, seen = GradClip.DECAY, 0.0, 0
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")
    network.train()
    n, shape = images.shape[0], (cfg.batch_size, *images.shape[1:])
    for step in range(cfg.steps):
        idx = torch.randint(0, n, (cfg.batch_size,), generator=data_gen).to(device)
        x = images[idx].float().div(127.5).sub(1.0)
        t = torch.rand(cfg.batch_size, device=device, generator=noise_gen)
        eps = torch.randn(shape, device=device, generator=noise_gen)
        with autocast:
            loss = denoiser.loss_at(x, t, eps).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.grad_clip is not None:
            if cfg.grad_clip_mode == "absolute":
                limit = cfg.grad_clip
            else:
                limit = cfg.grad_clip * norm_ema / (1 - decay_gn**seen) if seen else math.inf
            norm = float(torch.nn.utils.clip_grad_norm_(params, limit))
            norm_ema, seen = decay_gn * norm_ema + (1 - decay_gn) * norm, seen + 1
        opt.step()
        sched.step()
        d = min(cfg.ema_decay, (1 + step) / (10 + step))
        with torch.no_grad():
            torch._foreach_lerp_(ema_params, params, 1 - d)
            for e, b in zip(ema_buffers, buffers, strict=True):
                e.copy_(b)
    return ema


def harness_loop(denoiser, images: torch.Tensor, cfg, lr: float, warmup: int, device: torch.device):
    """``harness.trial.train.train``: (the EMA, the loop's stats)."""
    result = train(denoiser, images, None, 0, cfg, lr, warmup, device, None, SEED)
    return result.ema, result.stats


def timed(fn, device: torch.device) -> tuple[float, float, object]:
    """(wall s, CPU s of this process, result) of ``fn()``, the device synchronised at both ends."""
    sync(device)
    wall0, cpu0 = time.perf_counter(), time.process_time()
    out = fn()
    sync(device)
    return time.perf_counter() - wall0, time.process_time() - cpu0, out


def spread(values: list[float]) -> str:
    return f"{statistics.median(values):.3f} ({min(values):.3f}-{max(values):.3f})"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--study", default="studies/schedule_shift.yaml")
    parser.add_argument("--preset", help="network preset (default: the study's)")
    parser.add_argument("--resolution", type=int, help="image side (default: the study's)")
    parser.add_argument("--batch", type=int, help="batch size (default: the study's)")
    parser.add_argument("--steps", type=int, default=30, help="optimiser steps per round")
    parser.add_argument("--rounds", type=int, default=7, help="measured rounds per loop")
    parser.add_argument("--warmup-rounds", type=int, default=1, help="rounds per loop run first and discarded")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--compile", action="store_true", help="torch.compile the loss in both loops")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (CPU)")
    parser.add_argument("--images", type=int, default=512, help="random training images")
    parser.add_argument(
        "--peak-budget-s", type=float, default=None, help="time for the matmul peak (default: 1 s / 3 s)"
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    sets = [f"train.device={args.device}", f"train.steps={args.steps}", f"train.compile={str(args.compile).lower()}"]
    sets += [f"model.preset={args.preset}"] if args.preset else []
    sets += [f"dataset.resolution={args.resolution}"] if args.resolution else []
    sets += [f"train.batch_size={args.batch}"] if args.batch else []
    loaded = load_study(args.study, sets)
    config = loaded.trial_config(loaded.planned_cells()[0])
    found = recipe(config)
    res, cfg = config.resolution, config.train
    gen = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (args.images, 3, res, res), generator=gen, dtype=torch.uint8).to(device)

    def fresh():
        torch.manual_seed(SEED)
        return build_denoiser(config, 0, device)

    loops = {  # with --compile the harness compiles denoiser.loss (train.compile): the bare loop does the same
        "harness": lambda d: harness_loop(d, images, cfg, found.lr, found.warmup_steps, device),
        "bare": lambda d: bare_loop(
            _Compiled(d) if args.compile else d, images, cfg, found.lr, found.warmup_steps, device
        ),
    }

    denoiser = fresh()
    params = sum(p.numel() for p in denoiser.network.parameters())
    print(
        f"# {config.model.name} {config.model.preset} ({params:,d} params), {res} px, batch {cfg.batch_size}, "
        f"{args.steps} steps x {args.rounds} rounds (+{args.warmup_rounds} warm-up), device {args.device}"
        f"{' compiled' if args.compile else ''}, {torch.get_num_threads()} torch threads, "
        f"load average {os.getloadavg()[0]:.1f}"
    )
    results: dict[str, list[tuple[float, float]]] = {"harness": [], "bare": []}
    recorded: list[float] = []
    finals: dict[str, list[torch.Tensor]] = {}
    for r in range(args.warmup_rounds + args.rounds):
        for name, loop in loops.items() if r % 2 == 0 else reversed(loops.items()):
            d = fresh()
            wall, cpu, out = timed(lambda d=d, loop=loop: loop(d), device)
            ema, stats = out if name == "harness" else (out, {})
            if r == 0:  # the trained weights and their EMA
                finals[name] = [p.detach().float().cpu() for m in (d.network, ema) for p in m.parameters()]
            if r >= args.warmup_rounds:
                results[name].append((wall, cpu))
                if stats.get("train_images_per_s"):
                    recorded.append(stats["train_images_per_s"])
    same = all(torch.equal(a, b) for a, b in zip(finals["harness"], finals["bare"], strict=True))
    diff = max(float((a - b).abs().max()) for a, b in zip(finals["harness"], finals["bare"], strict=True))
    shown = f"{'yes' if same else 'no'} (max |diff| {diff:.3g})"
    print(f"# same arithmetic: weights and EMA after the first round bit-identical: {shown}")

    print(f"\n{'loop':8} {'CPU ms/step (median, min-max)':>32} {'wall ms/step (median, min-max)':>32}")
    for name, runs in results.items():
        cpu = [1e3 * c / args.steps for _, c in runs]
        wall = [1e3 * w / args.steps for w, _ in runs]
        print(f"{name:8} {spread(cpu):>32} {spread(wall):>32}")
    pairs = list(zip(results["harness"], results["bare"], strict=True))
    cpu_ratio = [b[1] / h[1] for h, b in pairs]
    wall_ratio = [b[0] / h[0] for h, b in pairs]
    print(f"harness/bare speed, CPU time:  {spread(cpu_ratio)}   (goal >= 0.97)")
    print(f"harness/bare speed, wall time: {spread(wall_ratio)}")

    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    flops = count_flops(denoiser.network, (3, res, res))["flops_per_image"]
    peak = measure_peak_flops(device, dtype, args.peak_budget_s)
    print(
        f"\n# MFU: 3 x {flops / 1e9:.3f} GFLOP/image x images/s over the measured {str(dtype).removeprefix('torch.')} "
        f"matmul peak {peak['peak_flops_per_s'] / 1e12:.3f} TFLOP/s (n={peak['matmul_n']}, quiet: {peak['quiet']})"
    )
    for name, runs in results.items():
        ips = [cfg.batch_size * args.steps / w for w, _ in runs]
        mfu = [3 * flops * v / peak["peak_flops_per_s"] for v in ips]
        print(f"{name:8} images/s {spread(ips):>26}   MFU {spread(mfu)} (whole rounds, warm-up steps included)")
    if recorded:
        mfu = [3 * flops * v / peak["peak_flops_per_s"] for v in recorded]
        print(f"harness  images/s {spread(recorded):>26}   MFU {spread(mfu)} (as the mfu metric records: steady steps)")


class _Compiled:
    """A denoiser whose ``loss_at`` is ``torch.compile``d, as ``train.compile`` does in the harness loop."""

    def __init__(self, denoiser):
        self.network, self.loss_at = denoiser.network, torch.compile(denoiser.loss_at)


if __name__ == "__main__":
    main()
