"""Calibration baselines (data floor, noise and mean-image ceilings) for the quality metrics."""

from __future__ import annotations

import torch
from metric_context import cpu_context

import components
from harness.metrics import METRICS
from harness.metrics.calibration import BASELINES, baseline_images, calibration_values


def split(n: int = 320, resolution: int = 32):
    data = components.build("dataset", {"name": "shapes", "resolution": resolution, "num_images": n, "cache_dir": None})
    return data.images[: n // 2], data.images[n // 2 :]  # (train, held-out)


def test_baseline_images():
    train, _ = split(64, 16)
    assert torch.equal(baseline_images("mean_image", train, 5, 0)[3], train.float().mean(0).round().to(torch.uint8))
    noise = baseline_images("noise", train, 5, 0)
    assert noise.shape == (5, 3, 16, 16) and noise.dtype == torch.uint8 and noise.float().std() > 50
    data = baseline_images("data", train, 5, 0)
    assert all(any(torch.equal(d, t) for t in train) for d in data)  # real training images


def test_floor_below_ceilings_and_cached(tmp_path):
    train, held_out = split()
    ctx = cpu_context(reference=held_out, dataset_fingerprint="toy", cache_dir=tmp_path, samples=lambda: None)
    rows = calibration_values(ctx, [METRICS["swd"](), METRICS["flops"]()], train, 128)
    by_name = {r["name"]: r for r in rows}
    assert set(by_name) == {f"swd_baseline_{k}" for k in BASELINES}  # only quality metrics get baselines
    floor = by_name["swd_baseline_data"]["value"]
    assert 3 * floor < by_name["swd_baseline_mean_image"]["value"]
    assert 3 * floor < by_name["swd_baseline_noise"]["value"]
    assert by_name["swd_baseline_data"]["attrs"]["n_generated"] == 128
    assert all(r["attrs"]["cache"] == "miss" for r in rows)
    again = calibration_values(ctx, [METRICS["swd"]()], train, 128)
    assert [r["value"] for r in again] == [r["value"] for r in rows] and again[0]["attrs"]["cache"] == "hit"
