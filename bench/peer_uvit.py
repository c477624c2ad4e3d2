"""The harness's U-ViT against a peer implementation at 128 px and equal parameters: training images/s.

    pip install --target /tmp/peer denoising-diffusion-pytorch einops --no-deps    # the peer, never a dependency
    python bench/peer_uvit.py [--peer /tmp/peer] [--preset small] [--batch 8] [--steps 3] [--rounds 3]

The peer is lucidrains' ``UViT`` from ``denoising_diffusion_pytorch/simple_diffusion.py`` (the U-ViT of simple
diffusion, as most people would try it), loaded from that file alone (the package's ``__init__`` imports its
trainer's dependencies). Without it the bench says so and exits 0.

Harness: ``uvit`` with the given preset at 128 px, wavelet stem (1 level: the conv levels start at 64 px) and
without a stem. Peer: down to the same 16 px transformer grid (``dim_mults`` (1, 2, 4) at patch 1; (1, 2) with its
patch-2 option), ``vit_depth`` = the preset's depth, and ``dim`` chosen so that its parameter count is the nearest
to the harness network's (each printed). A training step is forward, an MSE loss, backward and AdamW on random
data, the same batch for all; rounds alternate the networks (medians over rounds, the first step of each round
discarded); one torch thread unless ``--threads``.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import statistics
import sys
import time
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from harness.threads import apply_wait_policy  # noqa: E402

apply_wait_policy()  # as python -m harness.study does, before torch loads

import torch  # noqa: E402

from components import validate  # noqa: E402

RES = 128


def load_peer(folder: Path) -> ModuleType | None:
    """``simple_diffusion.py`` of the peer package under ``folder`` (its dependencies from there too), or None."""
    path = folder / "denoising_diffusion_pytorch" / "simple_diffusion.py"
    if not path.is_file():
        return None
    sys.path.insert(0, str(folder))  # einops, installed beside it
    spec = importlib.util.spec_from_file_location("peer_simple_diffusion", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def count(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def peer_at_params(peer: ModuleType, target: int, patch: int, depth: int) -> torch.nn.Module:
    """The peer UViT whose ``dim`` (a multiple of 8) gives the parameter count nearest ``target``."""
    mults = (1, 2, 4) if patch == 1 else (1, 2)

    def build(dim: int) -> torch.nn.Module:
        with torch.device("meta"):  # counting only: no memory, no init time
            return peer.UViT(dim, dim_mults=mults, vit_depth=depth, patch_size=patch, vit_dropout=0.0)

    best = min(range(8, 257, 8), key=lambda d: abs(count(build(d)) - target))
    torch.manual_seed(0)
    return peer.UViT(best, dim_mults=mults, vit_depth=depth, patch_size=patch, vit_dropout=0.0)


def step_seconds(model: torch.nn.Module, call, batch: int, steps: int) -> float:
    """Median seconds of forward + MSE + backward + AdamW over ``steps`` (after one warm-up step)."""
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    z = torch.randn(batch, 3, RES, RES)
    times = []
    for i in range(steps + 1):
        start = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        (call(model, z) - z).square().mean().backward()
        opt.step()
        if i:
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--peer", default=os.environ.get("PEER_PATH", "/tmp/peer"), help="the peer's --target")
    parser.add_argument("--preset", default="small")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    peer = load_peer(Path(args.peer))
    if peer is None:
        print(
            f"skipped: the peer is not installed under {args.peer} "
            f"(pip install --target {args.peer} denoising-diffusion-pytorch einops --no-deps)"
        )
        return
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    spec = {"name": "uvit", "preset": args.preset, "resolution": RES}
    harness_net = {stem: validate("network", {**spec, "stem": stem}).instantiate() for stem in ("wavelet", "none")}
    target = count(harness_net["wavelet"])
    depth = validate("network", {"name": "uvit", "preset": args.preset}).config()["depth"]
    nets = {
        "harness uvit, wavelet stem": (harness_net["wavelet"], lambda m, z: m(z, torch.zeros(z.shape[0]))),
        "harness uvit, no stem": (harness_net["none"], lambda m, z: m(z, torch.zeros(z.shape[0]))),
        "peer UViT, patch 1": (peer_at_params(peer, target, 1, depth), lambda m, z: m(z, torch.rand(z.shape[0]))),
        "peer UViT, patch 2": (peer_at_params(peer, target, 2, depth), lambda m, z: m(z, torch.rand(z.shape[0]))),
    }
    print(
        f"# {RES} px, batch {args.batch}, {args.steps} steps x {args.rounds} rounds, {torch.get_num_threads()} torch "
        f"thread(s), harness preset {args.preset!r}, load average {os.getloadavg()[0]:.1f}"
    )
    times: dict[str, list[float]] = {name: [] for name in nets}
    for r in range(args.rounds):
        for name, (model, call) in nets.items() if r % 2 == 0 else reversed(nets.items()):
            times[name].append(step_seconds(model, call, args.batch, args.steps))
    ours = statistics.median(times["harness uvit, wavelet stem"])
    print(f"{'network':28} {'params':>11} {'s/step':>8} {'images/s':>9} {'harness wavelet is x faster':>28}")
    for name, (model, _) in nets.items():
        sec = statistics.median(times[name])
        print(f"{name:28} {count(model):>11,d} {sec:8.3f} {args.batch / sec:9.2f} {sec / ours:>28.2f}")


if __name__ == "__main__":
    main()
