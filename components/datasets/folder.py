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
import stat
import threading
import warnings
import zipfile
import zlib
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path, PurePosixPath

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError
from pydantic import Field

from components.datasets.base import (
    MIN_IMAGES,
    DatasetError,
    ImageDataset,
    OverLimit,
    ReadLimits,
    cache_file,
    load_arrays,
    save_arrays,
)
from components.registry import Component

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg")
RESIZE_FILTER = Image.Resampling.LANCZOS
FOLDER_CACHE_VERSION = 1  # bump whenever decoding changes the pixels of a file
SMALL_MEMBER = 1 << 20  # zip members up to this size cannot hurt whatever their compression ratio
PROBE_HEADERS = 16  # images whose header ``probe`` reads (spread over the listing), besides the first


def _visible(parts: tuple[str, ...]) -> bool:
    return not any(p.startswith(".") or p == "__MACOSX" for p in parts)


def _is_image(name: str) -> bool:
    return name.lower().endswith(IMAGE_EXTENSIONS)


def _check_size(name: str, size: int, limits: ReadLimits | None) -> None:
    if limits is not None and size > limits.file_bytes:
        raise OverLimit("path", f"'{name}' is {size} bytes, above the limit {limits.file_bytes}", "file_bytes")


def _check_count(count: int, where: str, limits: ReadLimits | None) -> None:
    if limits is not None and count > limits.images:
        raise OverLimit("path", f"'{where}' holds more than {limits.images} images", "images")


def list_directory(root: Path, limits: ReadLimits | None = None) -> list[tuple[str, list]]:
    """(relative posix name, [size, mtime_ns]) of every visible image below ``root``, sorted by name.

    Symbolic links are followed, but a link back to a folder on its own path (a loop) is an error, and so is
    an image name that is not a regular file (a pipe or device would block reading). With ``limits``, the
    number of images and the size of each file are bounded (checked while listing, so a huge tree stops
    early)."""
    found: list[tuple[str, list]] = []
    root_stat = root.stat()
    stack: list[tuple[Path, str, frozenset]] = [(root, "", frozenset({(root_stat.st_dev, root_stat.st_ino)}))]
    while stack:
        directory, rel, ancestors = stack.pop()
        try:
            with os.scandir(directory) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError as err:
            raise DatasetError("path", f"cannot list '{directory}': {err.strerror or err}") from None
        for entry in entries:
            if not _visible((entry.name,)):
                continue
            name = f"{rel}{entry.name}"
            try:
                st = entry.stat()  # follows symbolic links
            except OSError as err:
                if _is_image(entry.name):
                    raise DatasetError("path", f"cannot open '{name}': {err.strerror or err}") from None
                continue  # a broken link that is not an image: ignored like any other non-image
            if stat.S_ISDIR(st.st_mode):
                if (st.st_dev, st.st_ino) in ancestors:
                    raise DatasetError("path", f"'{name}' is a symbolic link loop (it leads back to a parent folder)")
                stack.append((Path(entry.path), f"{name}/", ancestors | {(st.st_dev, st.st_ino)}))
            elif _is_image(entry.name):
                if not stat.S_ISREG(st.st_mode):
                    raise DatasetError("path", f"'{name}' is not a regular file (a pipe, socket or device)")
                _check_size(name, st.st_size, limits)
                found.append((name, [st.st_size, st.st_mtime_ns]))
                _check_count(len(found), str(root), limits)
    return sorted(found)


def list_zip(zf: zipfile.ZipFile, limits: ReadLimits | None = None) -> list[tuple[str, str, list]]:
    """(relative name, member name, [size, crc]) of every visible image member, sorted by relative name.

    With ``limits``: the number of images, each member's uncompressed size and, for members above
    ``SMALL_MEMBER`` bytes, its compression ratio are bounded (a zip bomb is refused from its directory,
    before anything is inflated; ``ZipFile.read`` never returns more than a member's declared size)."""
    members = [
        i
        for i in zf.infolist()
        if not i.is_dir() and _is_image(i.filename) and _visible(PurePosixPath(i.filename).parts)
    ]
    _check_count(len(members), str(zf.filename), limits)
    for i in members:
        _check_size(i.filename, i.file_size, limits)
        if limits is not None and i.file_size > SMALL_MEMBER and i.file_size > limits.zip_ratio * i.compress_size:
            raise OverLimit(
                "path",
                f"zip member '{i.filename}' inflates {i.compress_size} bytes to {i.file_size} "
                f"(ratio above {limits.zip_ratio}: a zip bomb?)",
                "zip_ratio",
            )
    parts = [PurePosixPath(i.filename).parts for i in members]
    strip = bool(parts) and len({p[0] for p in parts}) == 1 and all(len(p) >= 3 for p in parts)
    return sorted(
        ("/".join(p[1:] if strip else p), i.filename, [i.file_size, i.CRC]) for p, i in zip(parts, members, strict=True)
    )


def open_image(data: bytes, name: str, max_pixels: int | None = None) -> Image.Image:
    """The image in ``data`` (opened lazily: only the header is read), its size checked against ``max_pixels``
    before any pixel is decoded. Without ``max_pixels``, PIL's own decompression-bomb guard applies."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
    except UnidentifiedImageError:
        raise DatasetError("path", f"cannot decode image '{name}': not a readable PNG/JPEG file") from None
    except Image.DecompressionBombError as err:
        raise OverLimit("path", f"image '{name}' is too large: {err}", "image_pixels") from None
    except (OSError, SyntaxError, ValueError) as err:
        raise DatasetError("path", f"cannot decode image '{name}': {type(err).__name__}: {err}") from None
    w, h = img.size
    if max_pixels is not None and w * h > max_pixels:
        img.close()
        raise OverLimit("path", f"image '{name}' is {w}x{h} pixels, above the limit {max_pixels}", "image_pixels")
    return img


def decode_image(data: bytes, name: str, resolution: int, max_pixels: int | None = None) -> np.ndarray:
    """One file's bytes -> uint8 ``[3, R, R]``: EXIF transpose, RGB, centre crop, LANCZOS resize."""
    try:
        with open_image(data, name, max_pixels) as opened:
            img = ImageOps.exif_transpose(opened)
            if img.mode == "P" and "transparency" in img.info:
                img = img.convert("RGBA")
            if img.mode in ("RGBA", "LA", "PA", "La", "RGBa"):
                white = Image.new("RGBA", img.size, (255, 255, 255, 255))
                img = Image.alpha_composite(white, img.convert("RGBA"))
            img = img.convert("RGB")
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
        if isinstance(err, DatasetError):
            raise
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


READ_ERRORS = (OSError, EOFError, zipfile.BadZipFile, zlib.error)  # a file or zip member that cannot be read


def decode_all(names: list[str], read: Callable[[str], bytes], resolution: int) -> np.ndarray:
    """Decode every file (threads: PIL releases the GIL while decoding); ``[N, 3, R, R]`` in ``names`` order."""

    def work(name: str) -> np.ndarray:
        try:
            data = read(name)
        except READ_ERRORS as err:
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
    max_images: int | None = Field(None, ge=MIN_IMAGES)

    def instantiate(self) -> ImageDataset:
        with self._open(None) as (root, names, meta, read):
            names, class_names = self._select(names)
            return self._load(root, names, class_names, meta, read)

    def probe(self, limits: ReadLimits) -> int:
        """A cheap check that ``instantiate`` will work, decoding one image instead of the whole set: the path
        is a directory or a regular .zip file; its listing (every file's name and size; a zip's central
        directory) is within ``limits``; at least ``MIN_IMAGES`` images; the first image decodes and is at
        least ``resolution`` on a side; the headers of up to ``PROBE_HEADERS`` more images spread over the
        listing are PNG/JPEG within the pixel limit. Returns the number of images ``instantiate`` loads."""
        with self._open(limits) as (_, names, _, read):
            names, _ = self._select(names)
            if len(names) < MIN_IMAGES:
                raise DatasetError(
                    "path", f"'{self.path}' has {len(names)} image; at least {MIN_IMAGES} are needed (one is held out)"
                )
            decode_image(self._read(read, names[0]), names[0], self.resolution, limits.image_pixels)
            step = max(1, len(names) // PROBE_HEADERS)
            for name in names[step::step][:PROBE_HEADERS]:
                open_image(self._read(read, name), name, limits.image_pixels).close()
            return len(names)

    @contextmanager
    def _open(self, limits: ReadLimits | None) -> Iterator[tuple[Path, list[str], list, Callable[[str], bytes]]]:
        """(root, image names, cache metadata, read(name) -> bytes) of a directory or an open .zip."""
        root = Path(self.path).expanduser()
        try:
            st = root.stat()
        except FileNotFoundError:
            raise DatasetError("path", f"'{self.path}' does not exist") from None
        except OSError as err:  # e.g. a symbolic link to itself: "Too many levels of symbolic links"
            raise DatasetError("path", f"cannot open '{self.path}': {err.strerror or err}") from None
        if stat.S_ISDIR(st.st_mode):
            listing = list_directory(root, limits)
            yield root, [n for n, _ in listing], [[n, m] for n, m in listing], lambda n: (root / n).read_bytes()
            return
        if not stat.S_ISREG(st.st_mode):
            raise DatasetError("path", f"'{self.path}' is not a directory or a regular file (a pipe, socket or device)")
        if not zipfile.is_zipfile(root):
            raise DatasetError("path", f"'{self.path}' is neither a directory nor a .zip file")
        try:
            zf = zipfile.ZipFile(root)
        except (*READ_ERRORS, ValueError) as err:
            raise DatasetError("path", f"'{self.path}' is not a readable .zip file: {err}") from None
        with zf:
            listing = list_zip(zf, limits)
            member = {rel: m for rel, m, _ in listing}
            lock = threading.Lock()

            def read(rel: str) -> bytes:
                with lock:
                    return zf.read(member[rel])

            meta = [["<zip>", [st.st_size, st.st_mtime_ns]]] + [[rel, info] for rel, _, info in listing]
            yield root, [rel for rel, _, _ in listing], meta, read

    @staticmethod
    def _read(read: Callable[[str], bytes], name: str) -> bytes:
        try:
            return read(name)
        except READ_ERRORS as err:
            raise DatasetError("path", f"cannot read '{name}': {type(err).__name__}: {err}") from None

    def _select(self, names: list[str]) -> tuple[list[str], list[str]]:
        """(the images to load, the class names): every image found, or the ``max_images`` subset."""
        if not names:
            raise DatasetError("path", f"no images ({', '.join(IMAGE_EXTENSIONS)}, any case) found in '{self.path}'")
        class_names = self._class_names(names) if self.labels else []
        if self.max_images is not None and self.max_images < len(names):
            names = sorted(sorted(names, key=lambda n: hashlib.sha1(n.encode()).hexdigest())[: self.max_images])
        return names, class_names

    def _load(
        self, root: Path, names: list[str], class_names: list[str], meta: list, read: Callable[[str], bytes]
    ) -> ImageDataset:
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
