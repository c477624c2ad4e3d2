"""Network benchmark on this CPU: parameters and training throughput per preset, network, stem and
resolution, and the wavelet stem's cost next to one U-ViT training step (simple diffusion Sec. 4).

Run:  .venv/bin/python bench/networks.py [--presets tiny small] [--resolutions 64 128 256] [--threads N]

A training step is forward + backward + AdamW step on random data at batch 32 * (64 / resolution)^2
(at least 2), after warm-up steps. The last lines give parameter counts of every preset (built on the
meta device, so no memory or time is spent on the GPU-sized ones).
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from components import validate  # noqa: E402
from components.networks import NETWORKS  # noqa: E402


def batch_for(resolution: int) -> int:
    return max(2, 32 * 64 * 64 // (resolution * resolution))


def train_step_seconds(model: torch.nn.Module, batch: int, resolution: int, warmup: int, steps: int) -> float:
    """Median seconds of one forward + backward + AdamW step."""
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    z = torch.randn(batch, 3, resolution, resolution)
    logsnr = torch.linspace(-10, 10, batch)
    times = []
    for i in range(warmup + steps):
        start = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        (model(z, logsnr) - z).square().mean().backward()
        opt.step()
        if i >= warmup:
            times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]


def wavelet_seconds(batch: int, resolution: int, repeats: int = 5) -> float:
    """Median seconds of wavelet encode (forward) + decode (forward and backward), as in a training step."""
    stem = validate("stem", "wavelet").instantiate()
    x = torch.randn(batch, 3, resolution, resolution)
    times = []
    for _ in range(repeats + 1):
        start = time.perf_counter()
        h = stem.encode(x).requires_grad_(True)
        stem.decode(h).sum().backward()
        times.append(time.perf_counter() - start)
    return sorted(times[1:])[len(times[1:]) // 2]


def params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", nargs="+", default=["tiny", "small"])
    parser.add_argument("--resolutions", nargs="+", type=int, default=[64, 128, 256])
    parser.add_argument("--stems", nargs="+", default=["none", "wavelet"])
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument(
        "--paper-preset", default="base", help="also time a U-ViT step of this GPU-size preset at the top resolution"
    )
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    print(
        f"# torch {torch.__version__}, {torch.get_num_threads()} threads, {platform.processor() or platform.machine()}"
        f", load average {os.getloadavg()[0]:.1f}"
    )
    print(f"{'network':8} {'preset':6} {'stem':8} {'res':>4} {'batch':>5} {'params':>10} {'s/step':>8} {'img/s':>8}")
    step_at = {}
    for preset in args.presets:
        for name in sorted(NETWORKS):
            for stem in args.stems:
                for res in args.resolutions:
                    torch.manual_seed(0)
                    model = validate(
                        "network", {"name": name, "preset": preset, "resolution": res, "stem": stem}
                    ).instantiate()
                    b = batch_for(res)
                    sec = train_step_seconds(model, b, res, args.warmup, args.steps)
                    step_at[name, preset, stem, res] = sec
                    print(
                        f"{name:8} {preset:6} {stem:8} {res:4d} {b:5d} {params(model):10,d} {sec:8.3f} {b / sec:8.1f}",
                        flush=True,
                    )

    res = max(args.resolutions)
    b = batch_for(res)
    print(f"\n# wavelet encode + decode (fwd + bwd) at {res} px, batch {b}, as a share of one U-ViT training step")
    print("# (measured side by side: rounds alternate one step and one wavelet pass; medians of each)")
    presets = [p for p in args.presets if "wavelet" in args.stems] + ([args.paper_preset] if args.paper_preset else [])
    for preset in presets:
        torch.manual_seed(0)
        spec = {"name": "uvit", "preset": preset, "resolution": res, "stem": "wavelet"}
        model = validate("network", spec).instantiate()
        rounds = 2 if preset == args.paper_preset else 7
        steps, wavs = [], []
        for _ in range(rounds):
            steps.append(train_step_seconds(model, b, res, warmup=1 if not steps else 0, steps=1))
            wavs.append(wavelet_seconds(b, res, repeats=3))
        step, wav = sorted(steps)[len(steps) // 2], sorted(wavs)[len(wavs) // 2]
        print(
            f"#   uvit {preset:6} ({params(model):>11,d} params): step {step * 1e3:8.1f} ms, wavelet "
            f"{wav * 1e3:5.1f} ms = {100 * wav / step:5.2f}% (target <= 5%)",
            flush=True,
        )

    print("\n# parameters of every preset at 256 px (meta device)")
    print(f"{'network':8} {'preset':6} {'stem':8} {'params':>14}")
    for name in sorted(NETWORKS):
        for preset in NETWORKS[name].PRESETS:
            for stem in ("none", "wavelet"):
                with torch.device("meta"):
                    model = validate(
                        "network", {"name": name, "preset": preset, "resolution": 256, "stem": stem}
                    ).instantiate()
                print(f"{name:8} {preset:6} {stem:8} {params(model):14,d}")


if __name__ == "__main__":
    main()
