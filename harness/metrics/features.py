"""Inception features of images, exactly as clean-fid computes them, but batched and resized in parallel.

clean-fid resizes one image at a time on one CPU thread (``get_model_features``). Here the very same resize
function (``cleanfid.resize.build_resizer(mode)``: PIL bicubic on float32 channels to 299 x 299 in
``clean`` mode, none in ``legacy_tensorflow`` mode, where the network resizes) runs on a thread pool (PIL
releases the GIL while resampling), one batch ahead of the feature extractor. The result is bit-identical
per image; only the wall clock changes. Generated images never touch the disk.

Input conventions follow clean-fid: uint8 images in [0, 255]; a folder is read like
``cleanfid.utils.ResizeDataset`` (PIL ``convert("RGB")``, ``.npy`` loaded as is); one-channel images are
repeated to RGB (what ``convert("RGB")`` does for grayscale files).
"""

from __future__ import annotations

import glob
import os
import pathlib
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import torch
from cleanfid.resize import build_resizer
from cleanfid.utils import EXTENSIONS
from PIL import Image

from harness.metrics.base import MetricError
from harness.metrics.inception import FeatureExtractor

ImageSource = torch.Tensor | str | pathlib.Path  # uint8 [N, C, H, W], or a folder of image files


def list_folder(folder: str | pathlib.Path) -> list[str]:
    """Image files below ``folder``, sorted, as ``cleanfid.fid.get_folder_features`` lists them."""
    files = sorted(f for ext in EXTENSIONS for f in glob.glob(os.path.join(folder, f"**/*.{ext}"), recursive=True))
    if not files:
        raise MetricError(f"no image files ({', '.join(sorted(EXTENSIONS))}) in {folder}")
    return files


def _load_file(path: str) -> np.ndarray:
    if path.endswith(".npy"):
        return np.load(path)
    with Image.open(path) as img:
        return np.array(img.convert("RGB"))  # [H, W, 3] uint8


def as_items(source: ImageSource) -> Sequence[Any]:
    """A sequence of per-image items: [C, H, W] uint8 arrays or file paths."""
    if isinstance(source, torch.Tensor):
        if source.dtype != torch.uint8 or source.ndim != 4 or source.shape[1] not in (1, 3):
            raise MetricError(f"images must be uint8 [N, 1 or 3, H, W], got {source.dtype} {tuple(source.shape)}")
        return source.detach().cpu().numpy()  # [N, C, H, W]
    return list_folder(source)


class Preparer:
    """One item -> float32 tensor [3, h, w] ready for the extractor (clean-fid's resize for the mode)."""

    def __init__(self, mode: str):
        self.mode = mode
        self.resize = build_resizer(mode)

    def __call__(self, item: Any) -> torch.Tensor:
        if isinstance(item, str):
            hwc = _load_file(item)
        else:
            hwc = np.ascontiguousarray(item.transpose(1, 2, 0))  # [H, W, C]
        if hwc.ndim == 2:
            hwc = hwc[:, :, None]
        if hwc.shape[2] == 1:
            hwc = np.repeat(hwc, 3, axis=2)
        out = self.resize(hwc)  # float32 [299, 299, 3] (clean)
        return torch.from_numpy(np.ascontiguousarray(np.asarray(out, dtype=np.float32).transpose(2, 0, 1)))


def extract_features(
    source: ImageSource, extractor: FeatureExtractor, batch_size: int = 64, workers: int | None = None
) -> np.ndarray:
    """Features float32 [N, 2048] of every image of ``source``, in order."""
    items = as_items(source)
    n = len(items)
    if n == 0:
        raise MetricError("no images to extract features from")
    prepare = Preparer(extractor.mode)
    workers = workers or max(1, os.cpu_count() or 1)
    starts = list(range(0, n, batch_size))
    feats: list[np.ndarray] = []

    def fill(batch: torch.Tensor | None, j: int, i: int) -> torch.Tensor:
        x = prepare(items[i])
        if batch is None:  # first image: learn the prepared shape
            return x
        batch[j].copy_(x)  # workers write in place: no stacking on one thread
        return batch

    first = fill(None, 0, 0)
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="fid-resize") as pool:

        def submit(lo: int) -> tuple[torch.Tensor, list[Any]]:
            batch = torch.empty((min(lo + batch_size, n) - lo, *first.shape), dtype=torch.float32)
            return batch, [pool.submit(fill, batch, i - lo, i) for i in range(lo, lo + len(batch))]

        pending = submit(0)
        for k in range(len(starts)):
            batch, futures = pending
            if k + 1 < len(starts):
                pending = submit(starts[k + 1])  # resize the next batch while this one runs
            for f in futures:
                f.result()
            feats.append(extractor(batch))
    return np.concatenate(feats)
