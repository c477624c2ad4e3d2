"""Smoke test of every network x stem on CUDA in bf16 autocast: forward, backward, one AdamW step, and
a check that the loss, the gradients and the updated output are finite (simple diffusion Sec. 4).

Run:  python bench/gpu_networks.py [--device cuda|cpu] [--preset tiny] [--resolution 64] [--batch 4]

Prints one line per combination and a summary; exits 1 on any failure, 0 with a message when CUDA is
not available (unless ``--device cpu`` asks for the same checks on the CPU).
"""

from __future__ import annotations

import argparse
import sys
import time
import traceback
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from components import validate  # noqa: E402
from components.networks import NETWORKS  # noqa: E402
from components.stems import STEMS  # noqa: E402

STEM_SPECS = {
    "none": {"name": "none"},
    "wavelet": {"name": "wavelet", "levels": 1},
    "wavelet_l2": {"name": "wavelet", "levels": 2},
    "patch": {"name": "patch", "patch_size": 2},
    "patch_p4": {"name": "patch", "patch_size": 4},
}


def check(name: str, stem: dict, args: argparse.Namespace, device: torch.device) -> str:
    """One combination; returns a short description, raises on failure."""
    spec = validate(
        "network",
        {
            "name": name,
            "preset": args.preset,
            "resolution": args.resolution,
            "stem": stem,
            "num_classes": 10,
            "dropout": {"rate": 0.1, "max_resolution": 16},
        },
    )
    torch.manual_seed(0)
    model = spec.instantiate().to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    z = torch.randn(args.batch, 3, args.resolution, args.resolution, device=device)
    logsnr = torch.linspace(-10, 10, args.batch, device=device)
    labels = torch.arange(args.batch, device=device) % 11  # includes the null label 10
    start = time.perf_counter()
    for step in range(2):  # the 2nd sees a non-zero output layer
        opt.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=torch.bfloat16):
            out = model(z, logsnr, labels)
        if out.shape != z.shape:
            raise RuntimeError(f"output shape {tuple(out.shape)} != input shape {tuple(z.shape)}")
        loss = (out.float() - z).square().mean()
        if not torch.isfinite(loss):
            raise RuntimeError(f"non-finite loss at step {step}")
        loss.backward()
        bad = [n for n, p in model.named_parameters() if p.grad is not None and not torch.isfinite(p.grad).all()]
        if bad:
            raise RuntimeError(f"non-finite gradients in {bad[:3]}")
        opt.step()
    with torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16):
        out = model.eval()(z, logsnr, labels)
    if not torch.isfinite(out.float()).all() or out.abs().max() == 0:
        raise RuntimeError("output after the step is not finite or still zero")
    if device.type == "cuda":
        torch.cuda.synchronize()
    params = sum(p.numel() for p in model.parameters())
    return f"{params:,} params, loss {loss.item():.4f}, {time.perf_counter() - start:.2f} s"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    parser.add_argument("--preset", default="tiny")
    parser.add_argument("--resolution", type=int, default=64)
    parser.add_argument("--batch", type=int, default=4)
    args = parser.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        print("CUDA is not available; nothing checked (use --device cpu for the same checks on the CPU)")
        return 0
    device = torch.device(args.device)
    if {s["name"] for s in STEM_SPECS.values()} != set(STEMS):
        print(f"STEM_SPECS must cover every stem of the registry: {sorted(STEMS)}")
        return 1
    failures = []
    total = 0
    for name in sorted(NETWORKS):
        for label, stem in STEM_SPECS.items():
            total += 1
            try:
                print(f"ok   {name:5} {label:11} {check(name, stem, args, device)}", flush=True)
            except Exception as err:  # noqa: BLE001 - every failure is reported, the run goes on
                failures.append((name, label))
                print(f"FAIL {name:5} {label:11} {type(err).__name__}: {err}", flush=True)
                traceback.print_exc(limit=3)
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    setup = f"preset {args.preset}, {args.resolution} px, batch {args.batch}, bf16 autocast"
    print(f"\n{total - len(failures)}/{total} passed on {where} ({setup})")
    if failures:
        print("failed: " + ", ".join(f"{n}/{s}" for n, s in failures))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
