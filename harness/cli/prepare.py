"""``python -m harness.prepare SOURCE OUT --resolution R [--labels] [--max-images N]``

Prepares a dataset once for the ``array`` dataset (a memory-mapped uint8 array; see
components/datasets/array.py). SOURCE is one of:

- a directory tree or .zip of PNG/JPEG images: decoded exactly as the ``folder`` dataset decodes them
  (centre crop, LANCZOS resize; ``--labels``: classes from the first-level subfolders), a chunk at a time, so
  memory stays bounded whatever the number of images;
- downsampled-ImageNet batches (Chrabaszcz et al. 2017, ``Imagenet64_train_npz``): a ``.npz`` file, or a
  directory of them, each with ``data`` (uint8 [N, 3 R R], planes R, G, B) and ``labels`` (1-based); taken in
  file-name order, labels made 0-based.

OUT is written atomically (a temporary sibling directory renamed at the end): ``images.npy`` uint8
[N, 3, R, R], ``labels.npy`` int64 [N] (with labels), ``meta.json`` with the fingerprints. Then use
``dataset: {name: array, path: OUT, resolution: R, labels: true}`` in a study file.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import threading
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

from components.datasets.array import FORMAT_VERSION
from components.datasets.base import DatasetError, fingerprint_finish, fingerprint_start
from components.datasets.folder import decode_all, list_directory, list_zip
from harness.cli.common import cli_main
from harness.errors import UsageError

CHUNK = 4096  # images decoded and written at a time


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m harness.prepare", description=__doc__.split("\n\n")[1])
    parser.add_argument("source", help="image folder or .zip, or downsampled-ImageNet .npz file(s)")
    parser.add_argument("out", help="the prepared directory to write (must not exist)")
    parser.add_argument("--resolution", type=int, required=True, help="image side after crop and resize, pixels")
    parser.add_argument("--labels", action="store_true", help="keep class labels")
    parser.add_argument("--max-images", type=int, default=None, help="stop after this many images")
    return parser.parse_args(argv)


Chunks = Iterator[tuple[np.ndarray, np.ndarray | None]]  # (uint8 [n, 3, R, R], int64 [n] or None)


def folder_chunks(root: Path, resolution: int, labels: bool, limit: int | None) -> tuple[int, list[str], Chunks]:
    """(number of images, class names, chunks) of an image folder or zip, decoded like ``folder``."""
    if root.is_dir():
        names = [n for n, _ in list_directory(root)]

        def reader() -> tuple[Callable[[str], bytes], Callable[[], None]]:
            return (lambda n: (root / n).read_bytes()), (lambda: None)
    else:
        with zipfile.ZipFile(root) as zf:
            member = {rel: m for rel, m, _ in list_zip(zf)}
        names = sorted(member)

        def reader() -> tuple[Callable[[str], bytes], Callable[[], None]]:
            zf = zipfile.ZipFile(root)  # decode_all reads from threads: one shared handle, reads serialised
            lock = threading.Lock()

            def read(n: str) -> bytes:
                with lock:
                    return zf.read(member[n])

            return read, zf.close

    names = names[:limit] if limit else names
    if not names:
        raise UsageError(f"{root}: no PNG/JPEG images found")
    classes = sorted({n.split("/", 1)[0] for n in names if "/" in n}) if labels else []
    if labels and (not classes or any("/" not in n for n in names)):
        raise UsageError(f"{root}: --labels needs every image inside a first-level class subfolder")
    index = {c: i for i, c in enumerate(classes)}

    def chunks() -> Chunks:
        read, close = reader()
        try:
            for lo in range(0, len(names), CHUNK):
                part = names[lo : lo + CHUNK]
                lab = np.array([index[n.split("/", 1)[0]] for n in part], dtype=np.int64) if labels else None
                yield decode_all(part, read, resolution), lab
        finally:
            close()

    return len(names), classes, chunks()


def npz_chunks(files: list[Path], resolution: int, labels: bool, limit: int | None) -> tuple[int, list[str], Chunks]:
    """Downsampled-ImageNet batches: ``data`` uint8 [N, 3 R R] (planar RGB), ``labels`` 1-based."""
    sizes = []
    for f in files:
        with np.load(f, allow_pickle=False) as z:
            if "data" not in z.files or z["data"].dtype != np.uint8 or z["data"].shape[1:] != (3 * resolution**2,):
                raise UsageError(f"{f}: expected 'data' uint8 [N, {3 * resolution**2}] (3 x {resolution}^2 planar RGB)")
            if labels and "labels" not in z.files:
                raise UsageError(f"{f}: --labels but the file has no 'labels' array")
            sizes.append(len(z["data"]))
    total = min(sum(sizes), limit) if limit else sum(sizes)

    def chunks() -> Chunks:
        left = total
        for f in files:
            if left <= 0:
                return
            with np.load(f, allow_pickle=False) as z:
                data = z["data"][:left].reshape(-1, 3, resolution, resolution)
                lab = (np.asarray(z["labels"][:left], dtype=np.int64) - 1) if labels else None
            left -= len(data)
            yield data, lab

    return total, [], chunks()


def prepare(source: Path, out: Path, resolution: int, labels: bool, limit: int | None) -> dict:
    """Write ``out`` (see the module docstring); returns its meta.json content."""
    if out.exists():
        raise UsageError(f"{out}: already exists (choose a new OUT directory)")
    if not source.exists():
        raise UsageError(f"{source}: no such file or directory")
    npz = sorted(source.glob("*.npz")) if source.is_dir() else ([source] if source.suffix == ".npz" else [])
    if npz:
        total, classes, chunks = npz_chunks(npz, resolution, labels, limit)
    elif source.is_dir() or zipfile.is_zipfile(source):
        total, classes, chunks = folder_chunks(source, resolution, labels, limit)
    else:
        raise UsageError(f"{source}: neither an image folder, a .zip, nor downsampled-ImageNet .npz batches")
    tmp = out.with_name(f".{out.name}.tmp{os.getpid()}")
    tmp.mkdir(parents=True)
    try:
        shape = (total, 3, resolution, resolution)
        images = np.lib.format.open_memmap(tmp / "images.npy", mode="w+", dtype=np.uint8, shape=shape)
        all_labels = np.empty(total, dtype=np.int64) if labels else None
        h = fingerprint_start(list(shape))
        at = 0
        for block, lab in chunks:
            images[at : at + len(block)] = block
            h.update(np.ascontiguousarray(block).tobytes())
            if all_labels is not None:
                all_labels[at : at + len(block)] = lab
            at += len(block)
        images.flush()
        del images
        fingerprints = {"unlabelled": fingerprint_finish(h.copy(), None)}
        if all_labels is not None:
            np.save(tmp / "labels.npy", all_labels)
            fingerprints["labelled"] = fingerprint_finish(h, all_labels)
        n_classes = int(all_labels.max()) + 1 if all_labels is not None and total else 0
        meta = {
            "format_version": FORMAT_VERSION,
            "resolution": resolution,
            "num_images": total,
            "class_names": classes or ([str(i) for i in range(n_classes)] if labels else []),
            "fingerprints": fingerprints,
            "source": str(source.resolve()),
        }
        (tmp / "meta.json").write_text(json.dumps(meta, indent=1))
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return meta


@cli_main
def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.resolution < 1 or (args.max_images is not None and args.max_images < 1):
        raise UsageError("--resolution and --max-images: must be positive")
    try:
        meta = prepare(Path(args.source), Path(args.out), args.resolution, args.labels, args.max_images)
    except DatasetError as err:
        raise UsageError(f"{args.source}: {err.message}") from None
    print(f"prepared {meta['num_images']} images at {args.resolution} px in {args.out}")
    spec = f"{{name: array, path: {args.out}, resolution: {args.resolution}, labels: {str(args.labels).lower()}}}"
    print(f"use in a study file: dataset: {spec}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
