"""Time against FLOPs from 128 to 256 px: does a training step cost more than its FLOPs say at high resolution?

    python bench/scaling.py [--networks uvit unet] [--preset small] [--stems none wavelet] [--rounds 3]
    python bench/scaling.py --before REV ...      # the same figures for an earlier revision's networks too

For each network and stem, at 128 and 256 px: forward FLOPs per image (fvcore, the harness's ``flops`` metric)
and the CPU time per image of a training step (forward, MSE, backward, AdamW; batch 8 at 128 px and 2 at 256 px,
as ``bench/networks.py`` sizes them), the median over ``--rounds`` rounds that alternate the layouts. Printed:
the time ratio 256/128, the FLOP ratio, and their quotient (1.0: time grows as the FLOPs; above: the
full-resolution levels are memory-bound). ``--channels-last`` also times each network in channels-last memory
format (oneDNN's preferred layout) beside the default. ``--before REV``: each round also times that revision's
``components`` (``git archive`` into a temporary folder, run in a child process), the trees alternating. One
torch thread unless ``--threads``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [os.environ.get("BENCH_TREE", str(ROOT)), str(ROOT / "bench")]  # BENCH_TREE: --before's tree

import torch  # noqa: E402
from revision import checkout, describe  # noqa: E402  (bench/revision.py)

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


def one_round(name: str, preset: str, stem: str, layouts: list[bool], steps: int, reverse: bool) -> dict[str, float]:
    """Seconds per image of each (resolution, layout) in this process's ``components``, keyed ``"res/cl"``."""
    keys = [(res, cl) for res in BATCH for cl in layouts]
    out = {}
    for res, cl in reversed(keys) if reverse else keys:
        out[f"{res}/{int(cl)}"] = step_s_per_image(build(name, preset, stem, res, cl), res, steps, cl)
    return out


def child_round(tree: Path, argv: list[str]) -> dict[str, float]:
    """``one_round`` run by a child process on ``tree``'s ``components``."""
    env = {**os.environ, "BENCH_TREE": str(tree), "PYTHONPATH": str(tree)}
    done = subprocess.run(
        [sys.executable, __file__, *argv], cwd=tree, env=env, capture_output=True, text=True, check=True
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--networks", nargs="+", default=["uvit", "unet"])
    parser.add_argument("--preset", default="small")
    parser.add_argument("--stems", nargs="+", default=["none", "wavelet"])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=2, help="timed steps per round")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--channels-last", action="store_true", help="also time channels-last memory format")
    parser.add_argument("--before", help="an earlier revision to time beside this checkout")
    parser.add_argument("--child", nargs=3, metavar=("NET", "STEM", "REVERSE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    layouts = [False, True] if args.channels_last else [False]
    if args.child:
        name, stem, reverse = args.child
        print(json.dumps(one_round(name, args.preset, stem, layouts, args.steps, reverse == "1")))
        return
    common = ["--preset", args.preset, "--steps", str(args.steps), "--threads", str(args.threads)]
    common += ["--channels-last"] if args.channels_last else []
    trees = {"this": None}
    with contextlib.ExitStack() as stack:
        if args.before:
            trees = {"before": stack.enter_context(checkout(args.before)), "after": None}
            print(f"# before: {describe(args.before)}; after: this checkout")
        print(
            f"# preset {args.preset}, batch {BATCH}, {args.rounds} rounds x {args.steps} steps, CPU time per image, "
            f"{torch.get_num_threads()} torch thread(s), load average {os.getloadavg()[0]:.1f}"
        )
        print(
            f"{'network':8} {'stem':8} {'tree':6} {'layout':13} {'GFLOP 128':>9} {'GFLOP 256':>9} {'ms 128':>8} "
            f"{'ms 256':>8} {'time x':>7} {'FLOPs x':>7} {'time/FLOPs':>10}"
        )
        for name in args.networks:
            for stem in args.stems:
                gflop = {
                    res: count_flops(build(name, args.preset, stem, res, False), (3, res, res))["flops_per_image"] / 1e9
                    for res in BATCH
                }
                times: dict[str, dict[str, list[float]]] = {t: {} for t in trees}
                for r in range(args.rounds):
                    order = list(trees) if r % 2 == 0 else list(reversed(trees))
                    for t in order:
                        tree = trees[t]
                        got = (
                            one_round(name, args.preset, stem, layouts, args.steps, r % 2 == 1)
                            if tree is None
                            else child_round(tree, [*common, "--child", name, stem, str(r % 2)])
                        )
                        for key, value in got.items():
                            times[t].setdefault(key, []).append(value)
                for t in trees:
                    for cl in layouts:
                        ms = {res: 1e3 * statistics.median(times[t][f"{res}/{int(cl)}"]) for res in BATCH}
                        t_ratio, f_ratio = ms[256] / ms[128], gflop[256] / gflop[128]
                        print(
                            f"{name:8} {stem:8} {t:6} {'channels-last' if cl else 'contiguous':13} {gflop[128]:9.3f} "
                            f"{gflop[256]:9.3f} {ms[128]:8.1f} {ms[256]:8.1f} {t_ratio:7.2f} {f_ratio:7.2f} "
                            f"{t_ratio / f_ratio:10.2f}",
                            flush=True,
                        )


if __name__ == "__main__":
    main()
