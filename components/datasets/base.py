"""What every dataset returns: an in-memory ``ImageDataset`` of uint8 images, plus the shared cache helpers.

Images live decoded in memory as one uint8 tensor ``[N, 3, R, R]``; ``__getitem__`` scales one of them to
float32 in [-1, 1] (the paper's data range). The ``fingerprint`` is a content hash (images, labels,
resolution), so two datasets with the same pixels share cached FID reference statistics whatever spec
produced them.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import zipfile
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from components.registry import ComponentError

FINGERPRINT_VERSION = 1  # bump if the hashed byte layout below ever changes


class DatasetError(ComponentError):
    """A dataset spec or its files are wrong; family ``dataset``, ``key`` the offending parameter."""

    def __init__(self, key: str, message: str):
        super().__init__("dataset", key, " ".join(str(message).split()))  # always one line


class OverLimit(DatasetError):
    """A dataset is above one of the ``ReadLimits``; ``limit`` is the name of that field."""

    def __init__(self, key: str, message: str, limit: str):
        super().__init__(key, message)
        self.limit = limit


@dataclass(frozen=True)
class ReadLimits:
    """What checking a dataset (``probe``) may find acceptable; the caller chooses the values (the harness
    takes them from its limits table). Field names are the names of those limits."""

    images: int  # image files listed (a folder or a zip's central directory)
    file_bytes: int  # bytes of one image file; a zip member's uncompressed size
    zip_ratio: int  # uncompressed / compressed size of one (large) zip member: a zip bomb above it
    image_pixels: int  # width x height of one source image


MIN_IMAGES = 2  # one held-out image (validation loss, FID reference) and one to train on


class ImageDataset(Dataset):
    """Decoded images in memory: ``images`` uint8 ``[N, C, R, R]``, ``labels`` int64 ``[N]`` or None.

    ``dataset[i] -> (x, label)``: x float32 ``[C, R, R]`` in [-1, 1]; label an int, -1 when unlabelled.
    """

    def __init__(self, images: Tensor, labels: Tensor | None = None, class_names: list[str] | None = None):
        if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[-1] != images.shape[-2]:
            raise ValueError(f"images must be uint8 [N, C, R, R], got {images.dtype} {list(images.shape)}")
        if labels is not None and (labels.dtype != torch.int64 or labels.shape != images.shape[:1]):
            raise ValueError(f"labels must be int64 [N], got {labels.dtype} {list(labels.shape)}")
        self.images = images.contiguous()  # [N, C, R, R] uint8
        self.labels = labels  # [N] int64 or None
        self.class_names = list(class_names or []) if labels is not None else []
        self.num_classes = len(self.class_names)  # 0 when unlabelled
        self.resolution = int(images.shape[-1])
        self.channels = int(images.shape[1])

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def __getitem__(self, i: int) -> tuple[Tensor, int]:
        x = self.images[i].to(torch.float32) / 127.5 - 1.0  # [C, R, R] in [-1, 1]
        label = int(self.labels[i]) if self.labels is not None else -1
        return x, label

    @cached_property
    def fingerprint(self) -> str:
        """sha256 (hex) of the uint8 pixels, the labels and the resolution; stable across processes."""
        h = fingerprint_start(list(self.images.shape))
        h.update(self.images.numpy().tobytes())
        return fingerprint_finish(h, None if self.labels is None else self.labels.numpy())

    def split(self, holdout_fraction: float, seed: int) -> tuple[list[int], list[int]]:
        """Disjoint (train, holdout) index lists, each sorted; a pure function of (N, fraction, seed).

        The holdout has ``round(fraction * N)`` images (at least one when ``fraction > 0`` and N > 1),
        and the train part is never empty.
        """
        if not 0.0 <= holdout_fraction < 1.0:
            raise DatasetError("holdout_fraction", f"must be in [0, 1), got {holdout_fraction}")
        n = len(self)
        n_hold = int(round(holdout_fraction * n))
        if holdout_fraction > 0 and n > 1:
            n_hold = max(n_hold, 1)
        n_hold = min(n_hold, n - 1) if n > 0 else 0
        order = np.random.default_rng(int(seed)).permutation(n)
        return sorted(int(i) for i in order[n_hold:]), sorted(int(i) for i in order[:n_hold])

    def __repr__(self) -> str:
        return (
            f"ImageDataset(n={len(self)}, resolution={self.resolution}, channels={self.channels}, "
            f"num_classes={self.num_classes}, fingerprint={self.fingerprint[:12]})"
        )


def fingerprint_start(shape: list[int]) -> hashlib._Hash:
    """The hash ``ImageDataset.fingerprint`` feeds the images of ``shape`` into (C-order uint8 bytes next)."""
    h = hashlib.sha256()
    h.update(f"image-dataset-v{FINGERPRINT_VERSION}:{list(shape)}:".encode())
    return h


def fingerprint_finish(h: hashlib._Hash, labels: np.ndarray | None) -> str:
    """Add the labels (or their absence) to a hash of the images; the hex digest."""
    if labels is None:
        h.update(b":unlabelled")
    else:
        h.update(b":labels:")
        h.update(np.asarray(labels).astype("<i8").tobytes())
    return h.hexdigest()


def cache_file(cache_dir: str | None, name: str) -> Path | None:
    """``<cache_dir>/datasets/<name>``, or None when caching is off (``cache_dir=None``)."""
    return None if cache_dir is None else Path(cache_dir).expanduser() / "datasets" / name


def load_arrays(path: Path | None) -> dict[str, np.ndarray] | None:
    """The arrays of a cached ``.npz``, or None when absent or unreadable (then it is rebuilt)."""
    if path is None or not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as f:
            return {k: f[k] for k in f.files}
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
        return None


def save_arrays(path: Path | None, **arrays: np.ndarray) -> None:
    """Write a ``.npz`` atomically (temp file + rename), so concurrent workers never read half a file."""
    if path is None:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
