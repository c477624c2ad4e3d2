"""Calibration baselines: where a trial's quality numbers stand between "as good as data" and "noise".

For every quality metric of a trial (those with ``compares_samples``: SWD, FID, KID) the same metric, with the
same reference set, sample count and seed, is computed for three stand-ins for the generated images:

- ``data``: n images of the training split, i.e. exact draws from the data distribution: the floor a perfect
  model would reach at this sample count;
- ``noise``: n images of Gaussian noise N(0, 1) per pixel clipped to [-1, 1] (what the sampler starts from);
- ``mean_image``: n copies of the training split's mean image (right colours on average, no structure).

They are recorded with every trial as ``<metric>_baseline_<kind>`` (e.g. ``swd_baseline_noise``), computed once
per (reference, shape, n, seed, metric parameters) and cached in ``cache_dir/baselines/``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from pathlib import Path
from typing import Any

import torch

from harness.evaluation_rules import BASELINES
from harness.metrics.base import EvalContext, Metric
from harness.rows import ImageRows, mean_image

DESCRIPTIONS = {
    "data": "training-split images against the held-out reference (the floor at this sample count)",
    "noise": "Gaussian noise N(0, 1) per pixel clipped to [-1, 1] (a ceiling)",
    "mean_image": "copies of the training split's mean image (a ceiling)",
}
VERSION = 2  # bump when the baselines' definition changes (invalidates the cache)


def baseline_images(kind: str, train_images: torch.Tensor | ImageRows, n: int, seed: int) -> torch.Tensor:
    """uint8 [n, C, H, W] stand-ins for generated images; ``train_images`` uint8 [M, C, H, W]."""
    gen = torch.Generator().manual_seed(seed + 7)
    shape = (n, *train_images.shape[1:])
    if kind == "data":
        pick = torch.randperm(len(train_images), generator=gen)[:n]
        return train_images[pick].cpu()
    if kind == "noise":
        noise = torch.randn(shape, generator=gen).clamp(-1.0, 1.0)
        return ((noise + 1) * 127.5).round().to(torch.uint8)
    if kind == "mean_image":
        mean = mean_image(train_images).round().to(torch.uint8).cpu()  # [C, H, W], summed chunk by chunk
        return mean.expand(shape).contiguous()
    raise ValueError(f"unknown baseline {kind!r}; known: {', '.join(BASELINES)}")


def _cache_path(ctx: EvalContext, metrics: list[Metric], n: int) -> Path | None:
    if ctx.cache_dir is None:
        return None
    key = {
        "version": VERSION,
        "reference": ctx.dataset_fingerprint,
        "image_shape": list(ctx.image_shape),
        "n": n,
        "seed": ctx.seed,
        "metrics": [m.to_spec() for m in metrics],
        "fid": ctx.fid.model_dump(mode="json"),
    }
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:20]
    return Path(ctx.cache_dir) / "baselines" / f"{digest}.json"


def calibration_values(
    ctx: EvalContext, metrics: list[Metric], train_images: torch.Tensor | ImageRows, n: int
) -> list[dict]:
    """Metric rows ``<name>_baseline_<kind>`` for the headline value of every quality metric in ``metrics``."""
    quality = [m for m in metrics if m.compares_samples]
    if not quality:
        return []
    path = _cache_path(ctx, quality, n)
    if path is not None and path.is_file():
        try:
            return [{**row, "attrs": {**row["attrs"], "cache": "hit"}} for row in json.loads(path.read_text())]
        except (OSError, ValueError, KeyError, TypeError):
            pass  # unreadable: recompute and overwrite
    rows: list[dict[str, Any]] = []
    for kind in BASELINES:
        images = baseline_images(kind, train_images, n, ctx.seed)
        stand_in = dataclasses.replace(ctx, samples=lambda images=images: images)
        for metric in quality:
            headline = metric.outputs[0]
            for value in metric.compute(stand_in):
                if value.name != headline:
                    continue
                attrs = {**value.attrs, "baseline": kind, "description": DESCRIPTIONS[kind], "n_baseline": len(images)}
                name = f"{headline}_baseline_{kind}"
                rows.append({"name": name, "value": value.value, "unit": value.unit, "attrs": attrs})
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        part = path.with_name(f"{path.name}.part{os.getpid()}")
        part.write_text(json.dumps(rows, default=str))
        part.replace(path)
    return [{**row, "attrs": {**row["attrs"], "cache": "miss"}} for row in rows]
