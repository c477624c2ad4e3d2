"""``folder``: images from a directory tree or a .zip, decoded once at the target resolution and cached.

Files: ``.png``, ``.jpg``, ``.jpeg`` in any letter case, found recursively; hidden files and folders
(names starting with ``.``) and ``__MACOSX`` are skipped. In a .zip whose images all sit below one common
top-level folder (``data/cat/1.png``, ``data/dog/2.png``), that folder is treated as the root.

Per image: EXIF orientation applied; transparency composited over white; converted to RGB; centre-cropped to
the largest square (``left = (w - s) // 2``, ``top = (h - s) // 2``, ``s = min(w, h)``); resized to
``resolution`` with PIL's LANCZOS filter. Why LANCZOS: it is exact (no ``reducing_gap`` or JPEG draft
shortcuts, which change pixels), antialiased (PIL widens the kernel by the downscale factor) and the sharpest
of PIL's filters, so the fine detail the high-resolution ablations are about survives; it is what EDM's
``dataset_tool.py`` uses for centre-cropped datasets. Decoding happens once, so its cost does not matter.
Images smaller than ``resolution`` are an error rather than upsampled.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import threading
import zipfile
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path, PurePosixPath

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError
from pydantic import Field

from components.datasets.base import DatasetError, ImageDataset, cache_file, load_arrays, save_arrays
from components.registry import Component

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg")
RESIZE_FILTER = Image.Resampling.LANCZOS
FOLDER_CACHE_VERSION = 1  # bump whenever decoding changes the pixels of a file


def _visible(parts: tuple[str, ...]) -> bool:
    return not any(p.startswith(".") or p == "__MACOSX" for p in parts)


def _is_image(name: str) -> bool:
    return name.lower().endswith(IMAGE_EXTENSIONS)


def list_directory(root: Path) -> list[tuple[str, list]]:
    """(relative posix name, [size, mtime_ns]) of every visible image below ``root``, sorted by name."""
    found = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        dirnames[:] = [d for d in dirnames if _visible((d,))]
        for fname in filenames:
            if _is_image(fname) and _visible((fname,)):
                full = Path(dirpath) / fname
                st = full.stat()
                found.append((full.relative_to(root).as_posix(), [st.st_size, st.st_mtime_ns]))
    return sorted(found)


def list_zip(zf: zipfile.ZipFile) -> list[tuple[str, str, list]]:
    """(relative name, member name, [size, crc]) of every visible image member, sorted by relative name."""
    members = [
        i
        for i in zf.infolist()
        if not i.is_dir() and _is_image(i.filename) and _visible(PurePosixPath(i.filename).parts)
    ]
    parts = [PurePosixPath(i.filename).parts for i in members]
    strip = bool(parts) and len({p[0] for p in parts}) == 1 and all(len(p) >= 3 for p in parts)
    return sorted(
        ("/".join(p[1:] if strip else p), i.filename, [i.file_size, i.CRC]) for p, i in zip(parts, members, strict=True)
    )


def decode_image(data: bytes, name: str, resolution: int) -> np.ndarray:
    """One file's bytes -> uint8 ``[3, R, R]``: EXIF transpose, RGB, centre crop, LANCZOS resize."""
    try:
        with Image.open(io.BytesIO(data)) as opened:
            img = ImageOps.exif_transpose(opened)
            if img.mode == "P" and "transparency" in img.info:
                img = img.convert("RGBA")
            if img.mode in ("RGBA", "LA", "PA", "La", "RGBa"):
                white = Image.new("RGBA", img.size, (255, 255, 255, 255))
                img = Image.alpha_composite(white, img.convert("RGBA"))
            img = img.convert("RGB")
    except UnidentifiedImageError:
        raise DatasetError("path", f"cannot decode image '{name}': not a readable PNG/JPEG file") from None
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
        raise DatasetError("path", f"cannot decode image '{name}': {type(err).__name__}: {err}") from None
    w, h = img.size
    if min(w, h) < resolution:
        raise DatasetError(
            "resolution",
            f"image '{name}' is {w}x{h} pixels, smaller than resolution "
            f"{resolution}; lower the resolution or remove the image",
        )
    side = min(w, h)
    left, top = (w - side) // 2, (h - side) // 2
    img = img.crop((left, top, left + side, top + side)).resize((resolution, resolution), RESIZE_FILTER)
    return np.asarray(img, dtype=np.uint8).transpose(2, 0, 1)  # [H, W, 3] -> [3, R, R]


def decode_all(names: list[str], read: Callable[[str], bytes], resolution: int) -> np.ndarray:
    """Decode every file (threads: PIL releases the GIL while decoding); ``[N, 3, R, R]`` in ``names`` order."""

    def work(name: str) -> np.ndarray:
        try:
            data = read(name)
        except OSError as err:
            raise DatasetError("path", f"cannot read '{name}': {type(err).__name__}: {err}") from None
        return decode_image(data, name, resolution)

    out = np.empty((len(names), 3, resolution, resolution), dtype=np.uint8)
    pool = ThreadPoolExecutor(max_workers=max(1, min(8, os.cpu_count() or 1)))
    try:
        for i, arr in enumerate(pool.map(work, names)):
            out[i] = arr
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
    return out


class Folder(Component):
    """A directory tree or .zip of PNG/JPEG images (see the module docstring for the exact preprocessing).

    ``labels=True``: the class of an image is its first-level subfolder; classes are the sorted folder
    names. ``max_images``: a deterministic pseudo-random subset (files ordered by a hash of their relative
    name). With ``cache_dir`` set, the decoded set is saved under ``<cache_dir>/datasets/`` keyed by path,
    resolution, labels, max_images and every file's name, size and mtime (zip: member sizes and CRCs plus
    the archive's size and mtime), so training never re-decodes. ``path`` has no default: the registry
    test builds this entry with a temporary folder of images.
    """

    path: str  # directory or .zip file
    resolution: int = Field(32, ge=1)  # image side after crop + resize, pixels
    labels: bool = False  # class = first-level subfolder name
    cache_dir: str | None = None  # None: decode in memory, write nothing
    max_images: int | None = Field(None, ge=1)

    def instantiate(self) -> ImageDataset:
        root = Path(self.path).expanduser()
        if not root.exists():
            raise DatasetError("path", f"'{self.path}' does not exist")
        if root.is_dir():
            listing = list_directory(root)
            names = [n for n, _ in listing]
            meta = [[n, m] for n, m in listing]
            return self._load(root, names, meta, lambda n: (root / n).read_bytes())
        if not zipfile.is_zipfile(root):
            raise DatasetError("path", f"'{self.path}' is neither a directory nor a .zip file")
        st = root.stat()
        with zipfile.ZipFile(root) as zf:
            listing = list_zip(zf)
            member = {rel: m for rel, m, _ in listing}
            lock = threading.Lock()

            def read(rel: str) -> bytes:
                with lock:
                    return zf.read(member[rel])

            meta = [["<zip>", [st.st_size, st.st_mtime_ns]]] + [[rel, info] for rel, _, info in listing]
            return self._load(root, [rel for rel, _, _ in listing], meta, read)

    def _load(self, root: Path, names: list[str], meta: list, read: Callable[[str], bytes]) -> ImageDataset:
        if not names:
            raise DatasetError("path", f"no images ({', '.join(IMAGE_EXTENSIONS)}, any case) found in '{self.path}'")
        class_names = self._class_names(names) if self.labels else []
        if self.max_images is not None and self.max_images < len(names):
            names = sorted(sorted(names, key=lambda n: hashlib.sha1(n.encode()).hexdigest())[: self.max_images])
        key = json.dumps(
            [
                FOLDER_CACHE_VERSION,
                str(root.resolve()),
                self.resolution,
                self.labels,
                self.max_images,
                RESIZE_FILTER.name,
                meta,
            ]
        )
        path = cache_file(self.cache_dir, f"folder-{hashlib.sha256(key.encode()).hexdigest()[:24]}.npz")
        cached = load_arrays(path)
        if cached is not None and cached["images"].shape == (len(names), 3, self.resolution, self.resolution):
            images = cached["images"]
        else:
            images = decode_all(names, read, self.resolution)
            save_arrays(path, images=images)
        labels = None
        if self.labels:
            index = {c: i for i, c in enumerate(class_names)}
            labels = torch.tensor([index[n.split("/", 1)[0]] for n in names], dtype=torch.int64)
        return ImageDataset(torch.from_numpy(np.ascontiguousarray(images)), labels, class_names or None)

    def _class_names(self, names: list[str]) -> list[str]:
        """Sorted first-level subfolder names; every image must sit inside one."""
        loose = [n for n in names if "/" not in n]
        if len(loose) == len(names):
            raise DatasetError(
                "labels",
                f"labels=True but '{self.path}' has no subfolders; put each "
                f"class's images in its own first-level subfolder",
            )
        if loose:
            raise DatasetError(
                "labels", f"labels=True but image '{loose[0]}' is not inside a class subfolder of '{self.path}'"
            )
        return sorted({n.split("/", 1)[0] for n in names})
