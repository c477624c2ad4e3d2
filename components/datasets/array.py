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

from components.datasets.base import MIN_IMAGES, DatasetError, ImageDataset, ReadLimits
from components.registry import Component

FORMAT_VERSION = 1


class Array(Component):
    """A directory prepared by ``python -m harness.prepare`` (see the module docstring)."""

    path: str  # the prepared directory
    resolution: int = Field(32, ge=1)  # must equal the prepared resolution (checked)
    labels: bool = False  # use labels.npy (the prepared set must have labels)
    max_images: int | None = Field(None, ge=MIN_IMAGES)  # a deterministic pseudo-random subset (seed 0), in file order
    cache_dir: str | None = None  # accepted for a uniform dataset interface; nothing is cached

    def probe(self, limits: ReadLimits) -> int:
        """A cheap check that ``instantiate`` will work: the directory, meta.json and the array's header
        (nothing else is read). Returns the number of images ``instantiate`` loads."""
        _, images = self._open()
        n = images.shape[0]
        if n > limits.images:
            raise DatasetError("path", f"'{self.path}' holds {n} images, more than the limit {limits.images}")
        if n < MIN_IMAGES:
            raise DatasetError("path", f"'{self.path}' holds {n} image; at least {MIN_IMAGES} are needed")
        return min(n, self.max_images or n)

    def bytes_in_memory(self, count: int) -> int:
        """Bytes the loaded dataset holds in memory: none for the memory map itself (pages are read as batches
        touch them and the kernel may drop them again); a ``max_images`` subset is a copy."""
        subset = self.max_images is not None
        return count * 3 * self.resolution**2 if subset else 0

    def _open(self) -> tuple[dict, np.ndarray]:
        """(meta.json, the memory-mapped images [N, 3, R, R]) after checking format, shape and resolution."""
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
        if not isinstance(meta, dict) or meta.get("format_version") != FORMAT_VERSION:
            raise DatasetError("path", f"'{self.path}': meta.json is not format_version {FORMAT_VERSION}")
        if images.dtype != np.uint8 or images.ndim != 4 or images.shape[1:] != (3, *(2 * [images.shape[-1]])):
            got = f"{images.dtype} {images.shape}"
            raise DatasetError("path", f"'{images_path}': expected uint8 [N, 3, R, R], got {got}")
        if images.shape[-1] != self.resolution:
            found = f"'{self.path}' was prepared at {images.shape[-1]} px, not {self.resolution}"
            raise DatasetError("resolution", f"{found}; prepare it again with --resolution {self.resolution}")
        if self.labels and not (root / "labels.npy").is_file():
            raise DatasetError("labels", f"labels=True but '{self.path}' was prepared without labels")
        return meta, images

    def instantiate(self) -> ImageDataset:
        meta, images = self._open()
        n = images.shape[0]
        labels, class_names = None, None
        if self.labels:
            labels = torch.from_numpy(np.load(Path(self.path).expanduser() / "labels.npy", allow_pickle=False))
            labels = labels.to(torch.int64)
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
