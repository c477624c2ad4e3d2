"""Time against FLOPs from 128 to 256 px: does a training step cost more than its FLOPs say at high resolution?

    python bench/scaling.py [--networks uvit unet] [--preset small] [--stems none wavelet] [--rounds 3]

For each network and stem, at 128 and 256 px: forward FLOPs per image (fvcore, the harness's ``flops`` metric)
and the CPU time per image of a training step (forward, MSE, backward, AdamW; batch 8 at 128 px and 2 at 256 px,
as ``bench/networks.py`` sizes them), the median over ``--rounds`` rounds that alternate the layouts. Printed:
the time ratio 256/128, the FLOP ratio, and their quotient (1.0: time grows as the FLOPs; above: the
full-resolution levels are memory-bound). ``--channels-last`` also times each network in channels-last memory
format (oneDNN's preferred layout) beside the default. One torch thread unless ``--threads``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from components import validate  # noqa: E402
from harness.metrics.flops import count_flops  # noqa: E402

BATCH = {128: 8, 256: 2}


def build(name: str, preset: str, stem: str, res: int, channels_last: bool) -> torch.nn.Module:
    torch.manual_seed(0)
    model = validate("network", {"name": name, "preset": preset, "resolution": res, "stem": stem}).instantiate()
    return model.to(memory_format=torch.channels_last) if channels_last else model


def step_s_per_image(model: torch.nn.Module, res: int, steps: int, channels_last: bool) -> float:
    """Median CPU seconds per image of a training step (after one warm-up step)."""
    b = BATCH[res]
    z = torch.randn(b, 3, res, res)
    z = z.contiguous(memory_format=torch.channels_last) if channels_last else z
    logsnr = torch.linspace(-5, 5, b)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    times = []
    for i in range(steps + 1):
        start = time.process_time()
        opt.zero_grad(set_to_none=True)
        (model(z, logsnr) - z).square().mean().backward()
        opt.step()
        if i:
            times.append((time.process_time() - start) / b)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--networks", nargs="+", default=["uvit", "unet"])
    parser.add_argument("--preset", default="small")
    parser.add_argument("--stems", nargs="+", default=["none", "wavelet"])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=2, help="timed steps per round")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--channels-last", action="store_true", help="also time channels-last memory format")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    layouts = [False, True] if args.channels_last else [False]
    print(
        f"# preset {args.preset}, batch {BATCH}, {args.rounds} rounds x {args.steps} steps, CPU time per image, "
        f"{torch.get_num_threads()} torch thread(s), load average {os.getloadavg()[0]:.1f}"
    )
    print(
        f"{'network':8} {'stem':8} {'layout':13} {'GFLOP 128':>9} {'GFLOP 256':>9} {'ms 128':>8} {'ms 256':>8} "
        f"{'time x':>7} {'FLOPs x':>7} {'time/FLOPs':>10}"
    )
    for name in args.networks:
        for stem in args.stems:
            flops = {res: count_flops(build(name, args.preset, stem, res, False), (3, res, res)) for res in BATCH}
            gflop = {res: flops[res]["flops_per_image"] / 1e9 for res in BATCH}
            nets = {(res, cl): build(name, args.preset, stem, res, cl) for res in BATCH for cl in layouts}
            times: dict[tuple[int, bool], list[float]] = {key: [] for key in nets}
            for r in range(args.rounds):
                for key in nets if r % 2 == 0 else reversed(list(nets)):
                    times[key].append(step_s_per_image(nets[key], key[0], args.steps, key[1]))
            for cl in layouts:
                ms = {res: 1e3 * statistics.median(times[res, cl]) for res in BATCH}
                t_ratio, f_ratio = ms[256] / ms[128], gflop[256] / gflop[128]
                print(
                    f"{name:8} {stem:8} {'channels-last' if cl else 'contiguous':13} {gflop[128]:9.3f} "
                    f"{gflop[256]:9.3f} {ms[128]:8.1f} {ms[256]:8.1f} {t_ratio:7.2f} {f_ratio:7.2f} "
                    f"{t_ratio / f_ratio:10.2f}",
                    flush=True,
                )


if __name__ == "__main__":
    main()
