"""Dataset benchmark on this CPU: the procedural ``shapes`` set, generated in chunks of ``CHUNK`` images (as the
harness does) next to the same images rendered one at a time, per resolution, with the machine load during each
measurement (a figure taken under load is marked).

Run:  .venv/bin/python bench/datasets.py [--images 512] [--resolutions 32 64 128] [--repeats 3]

This replaces the wall-clock assertion the test suite used to make (512 images at 64 px in under 5 s): a speed
target belongs here, where a busy machine shows up as a marked figure instead of a failed test. The target on a
quiet 2-core CPU: 512 images at 64 px in well under 5 s (about 0.5 s).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from components.datasets import shapes  # noqa: E402
from harness.metrics.perf import LoadMeter, under_load  # noqa: E402


def one_at_a_time(num_images: int, resolution: int, seed: int) -> np.ndarray:
    """The same scenes as ``generate_shapes``, rendered one image per call (the per-image baseline)."""
    out = []
    for chunk in range((num_images + shapes.CHUNK - 1) // shapes.CHUNK):
        scenes = shapes.draw_scenes(np.random.default_rng([seed, chunk, 0]), shapes.CHUNK)
        rng = np.random.default_rng([seed, chunk, 1])
        take = min(shapes.CHUNK, num_images - chunk * shapes.CHUNK)
        out += [shapes.render({k: v[i : i + 1] for k, v in scenes.items()}, resolution, rng) for i in range(take)]
    return np.concatenate(out)


def best_seconds(fn, repeats: int) -> tuple[float, bool]:
    """Best wall time of ``repeats`` calls, and whether any of them ran under load."""
    best, loaded = float("inf"), False
    for _ in range(repeats):
        meter, start = LoadMeter(), time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
        stats = meter.stats("bench")
        loaded |= under_load(stats["bench_other_load_cores"], stats["bench_torch_threads"], stats["bench_cpu_count"])
    return best, loaded


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=512)
    parser.add_argument("--resolutions", nargs="+", type=int, default=[32, 64, 128])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    print(f"shapes: {args.images} images, best of {args.repeats}; chunks of {shapes.CHUNK} vs one image per call")
    print(f"{'px':>5} {'chunked s':>10} {'images/s':>9} {'one-by-one s':>13} {'ratio':>6}  load")
    for r in args.resolutions:
        chunked, load_a = best_seconds(lambda r=r: shapes.generate_shapes(args.images, r, 0), args.repeats)
        single, load_b = best_seconds(lambda r=r: one_at_a_time(args.images, r, 0), max(1, args.repeats // 2))
        mark = "measured under load" if load_a or load_b else "quiet"
        same = np.array_equal(shapes.generate_shapes(args.images, r, 0)[0], one_at_a_time(args.images, r, 0))
        mark += "" if same else "; the one-by-one images differ (not a like-for-like comparison)"
        print(
            f"{r:>5} {chunked:>10.3f} {args.images / chunked:>9.0f} {single:>13.3f} {single / chunked:>5.1f}x  {mark}"
        )


if __name__ == "__main__":
    main()
