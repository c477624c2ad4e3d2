"""Inception features of images, exactly as clean-fid computes them, but batched and resized in parallel.

clean-fid resizes one image at a time on one CPU thread (``get_model_features``). In ``clean`` mode its
resize is PIL bicubic on float32 channels to 299 x 299, then a clip to [0, 255]: a linear map per channel,
x -> A x B^T, followed by the clip. Here A and B are read off PIL itself (by resizing unit vectors, once
per input size) and applied as matrix products on a thread pool, one batch ahead of the feature extractor:
the same resize to float rounding (max |difference| about 6e-5 on the 0-255 scale, tested) at about a
third of PIL's CPU time. ``legacy_tensorflow`` mode has no resize here (the network resizes) and uses
clean-fid's function as is. Generated images never touch the disk.

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


CLEAN_SIZE = 299  # clean-fid's output size in clean mode


def pil_bicubic_matrix(length: int, out: int = CLEAN_SIZE) -> torch.Tensor:
    """[out, length] float32: column i is PIL's float ("F") bicubic resize of the unit vector e_i, so that
    resizing a [length, length] channel X to [out, out] is M X M^T (PIL resizes separably)."""
    m = np.zeros((out, length), dtype=np.float64)
    for i in range(length):
        unit = np.zeros((length, 1), dtype=np.float32)
        unit[i, 0] = 1.0
        m[:, i] = np.asarray(Image.fromarray(unit, mode="F").resize((1, out), Image.BICUBIC))[:, 0]
    return torch.from_numpy(m).float()


class Preparer:
    """One item -> float32 tensor [3, h, w] ready for the extractor (clean-fid's resize for the mode)."""

    def __init__(self, mode: str):
        self.mode = mode
        self.resize = build_resizer(mode)
        self.matrices: dict[int, torch.Tensor] = {}  # input side -> [299, side]

    def matrix(self, length: int) -> torch.Tensor:
        if length not in self.matrices:  # a race computes it twice, harmlessly
            self.matrices[length] = pil_bicubic_matrix(length)
        return self.matrices[length]

    def clean_resize(self, chw: np.ndarray) -> torch.Tensor:
        """clean-fid's clean-mode resize as matrix products: [3, h, w] -> float32 [3, 299, 299]."""
        x = torch.from_numpy(np.ascontiguousarray(chw)).float()
        rows, cols = self.matrix(x.shape[1]), self.matrix(x.shape[2])
        return (rows @ x @ cols.T).clamp_(0, 255)

    def __call__(self, item: Any) -> torch.Tensor:
        if isinstance(item, str):
            hwc = _load_file(item)
        else:
            hwc = np.ascontiguousarray(item.transpose(1, 2, 0))  # [H, W, C]
        if hwc.ndim == 2:
            hwc = hwc[:, :, None]
        if hwc.shape[2] == 1:
            hwc = np.repeat(hwc, 3, axis=2)
        if self.mode == "clean":
            return self.clean_resize(hwc.transpose(2, 0, 1))
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
