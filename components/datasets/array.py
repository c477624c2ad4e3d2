"""``array``: a prepared, memory-mapped uint8 array of images: the format for large datasets (ImageNet 64/128,
FFHQ, CelebA-HQ) that should neither be decoded again per run nor held in memory twice.

A prepared dataset is a directory (written by ``python -m harness.prepare``) holding
``images.npy`` (uint8 ``[N, 3, R, R]``, C order), optionally ``labels.npy`` (int64 ``[N]``) and ``meta.json``
(``format_version``, ``resolution``, ``num_images``, ``class_names``, ``fingerprints``, ``source``). The images
are memory-mapped copy-on-write (``np.load(mmap_mode="c")``): pages are read when a batch touches them and
nothing is written back. The fingerprint was computed while preparing, with the same definition as
``ImageDataset.fingerprint``, so opening a large set does not hash it again.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from pydantic import Field

from components.datasets.base import DatasetError, ImageDataset
from components.registry import Component

FORMAT_VERSION = 1


class Array(Component):
    """A directory prepared by ``python -m harness.prepare`` (see the module docstring)."""

    path: str  # the prepared directory
    resolution: int = Field(32, ge=1)  # must equal the prepared resolution (checked)
    labels: bool = False  # use labels.npy (the prepared set must have labels)
    max_images: int | None = Field(None, ge=1)  # a deterministic pseudo-random subset (seed 0), in file order
    cache_dir: str | None = None  # accepted for a uniform dataset interface; nothing is cached

    def instantiate(self) -> ImageDataset:
        root = Path(self.path).expanduser()
        meta_path, images_path = root / "meta.json", root / "images.npy"
        if not root.is_dir() or not meta_path.is_file() or not images_path.is_file():
            how = "make one with: python -m harness.prepare SOURCE OUT --resolution R"
            raise DatasetError("path", f"'{self.path}' is not a prepared dataset (images.npy + meta.json); {how}")
        try:
            meta = json.loads(meta_path.read_text())
            images = np.load(images_path, mmap_mode="c", allow_pickle=False)
        except (OSError, ValueError) as err:
            raise DatasetError("path", f"cannot read '{self.path}': {type(err).__name__}: {err}") from None
        if meta.get("format_version") != FORMAT_VERSION:
            raise DatasetError("path", f"'{self.path}': format_version {meta.get('format_version')!r}, expected 1")
        n = images.shape[0] if images.ndim else 0
        if images.dtype != np.uint8 or images.ndim != 4 or images.shape[1:] != (3, *(2 * [images.shape[-1]])):
            raise DatasetError(
                "path", f"'{images_path}': expected uint8 [N, 3, R, R], got {images.dtype} {images.shape}"
            )
        if images.shape[-1] != self.resolution:
            found = f"'{self.path}' was prepared at {images.shape[-1]} px, not {self.resolution}"
            raise DatasetError("resolution", f"{found}; prepare it again with --resolution {self.resolution}")
        labels, class_names = None, None
        if self.labels:
            if not (root / "labels.npy").is_file():
                raise DatasetError("labels", f"labels=True but '{self.path}' was prepared without labels")
            labels = torch.from_numpy(np.load(root / "labels.npy", allow_pickle=False).astype(np.int64))
            class_names = list(meta.get("class_names") or [str(i) for i in range(int(labels.max()) + 1)])
        tensor = torch.from_numpy(images)
        subset = self.max_images is not None and self.max_images < n
        if subset:
            pick = torch.from_numpy(np.sort(np.random.default_rng(0).permutation(n)[: self.max_images]))
            tensor, labels = tensor[pick], labels[pick] if labels is not None else None
        data = ImageDataset(tensor, labels, class_names)
        known = (meta.get("fingerprints") or {}).get("labelled" if self.labels else "unlabelled")
        if known and not subset:
            data.__dict__["fingerprint"] = known  # computed while preparing, same definition: no re-hash
        return data
