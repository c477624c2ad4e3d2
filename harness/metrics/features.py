"""Inception features of images, exactly as clean-fid computes them, but resized a batch at a time.

clean-fid resizes one image at a time on one CPU thread (``get_model_features``). In ``clean`` mode its
resize is PIL bicubic on float32 channels to 299 x 299, then a clip to [0, 255]: a linear map per channel,
x -> A x B^T, followed by the clip. Here A and B are read off PIL itself (by resizing unit vectors, once
per input size) and a whole batch is resized with two matrix products on the extractor's device (one
large GEMM on a CPU, all cores; nearly free on a GPU), then clipped and normalised in place as clean-fid's
``InceptionV3W.forward`` normalises: ``(x - 128) / 128``. The resized pixels equal PIL's to float rounding
(max |difference| about 6e-5 on the 0-255 scale, tested). Image files are decoded on a thread pool, one
batch ahead. ``legacy_tensorflow`` mode has no resize here (the network resizes). Generated images never
touch the disk.

Input conventions follow clean-fid: uint8 images in [0, 255]; a folder is read like
``cleanfid.utils.ResizeDataset`` (PIL ``convert("RGB")``, ``.npy`` loaded as is); one-channel images are
repeated to RGB (what ``convert("RGB")`` does for grayscale files).
"""

from __future__ import annotations

import contextlib
import glob
import os
import pathlib
import shutil
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch
from PIL import Image

from harness.metrics.base import MetricError
from harness.metrics.inception import FeatureExtractor

ImageSource = torch.Tensor | str | pathlib.Path  # uint8 [N, C, H, W], or a folder of image files
CLEAN_SIZE = 299  # clean-fid's output size in clean mode


def list_folder(folder: str | pathlib.Path) -> list[str]:
    """Image files below ``folder``, sorted, as ``cleanfid.fid.get_folder_features`` lists them."""
    # deferred: cleanfid.utils imports torchvision (-> torch._dynamo), about a second of every command's start-up
    from cleanfid.utils import EXTENSIONS

    files = sorted(f for ext in EXTENSIONS for f in glob.glob(os.path.join(folder, f"**/*.{ext}"), recursive=True))
    if not files:
        raise MetricError(f"no image files ({', '.join(sorted(EXTENSIONS))}) in {folder}")
    return files


def load_file(path: str) -> np.ndarray:
    """One image file -> uint8 [3, H, W] (``.npy`` as stored, [H, W, C] or [H, W])."""
    if path.endswith(".npy"):
        hwc = np.load(path)
    else:
        with Image.open(path) as img:
            hwc = np.array(img.convert("RGB"))  # [H, W, 3] uint8
    if hwc.ndim == 2:
        hwc = hwc[:, :, None]
    return hwc.transpose(2, 0, 1)


def write_folder(images: torch.Tensor, folder: pathlib.Path) -> pathlib.Path:
    """uint8 [N, C, H, W] -> ``folder/00000.png`` ..., the folder layout ``list_folder`` and clean-fid read.
    Written to ``<folder>.part`` and renamed, so a rerun never mixes two sets of images."""
    part = folder.with_name(folder.name + ".part")
    shutil.rmtree(part, ignore_errors=True)
    part.mkdir(parents=True)
    for i, img in enumerate(images):
        Image.fromarray(img.permute(1, 2, 0).squeeze(2).numpy()).save(part / f"{i:05d}.png")
    shutil.rmtree(folder, ignore_errors=True)
    part.rename(folder)
    return folder


def pil_bicubic_matrix(length: int, out: int = CLEAN_SIZE) -> torch.Tensor:
    """[out, length] float32: column i is PIL's float ("F") bicubic resize of the unit vector e_i, so that
    resizing a [length, length] channel X to [out, out] is M X M^T (PIL resizes separably)."""
    m = np.zeros((out, length), dtype=np.float64)
    for i in range(length):
        unit = np.zeros((length, 1), dtype=np.float32)
        unit[i, 0] = 1.0
        m[:, i] = np.asarray(Image.fromarray(unit, mode="F").resize((1, out), Image.BICUBIC))[:, 0]
    return torch.from_numpy(m).float()


@contextlib.contextmanager
def full_fp32_matmul() -> Iterator[None]:
    """Matrix products in full float32 (no TF32 on CUDA) inside the block, whatever the caller set."""
    previous = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("highest")
    try:
        yield
    finally:
        torch.set_float32_matmul_precision(previous)


class CleanResizer:
    """clean-fid's clean-mode resize of uint8 batches as matrix products on ``device``.

    The output lives in one buffer reused from batch to batch: a fresh [64, 3, 299, 299] float32 tensor
    (68 MB) per batch costs more in page faults than the resize itself on a CPU. Each call overwrites the
    previous call's result. ``normalised`` hands the extractor its input; on a CPU in channels-last
    layout, where oneDNN runs Inception's convolutions about 1.5x faster (the same features to float
    rounding, tested); on a GPU in clean-fid's own layout.
    """

    def __init__(self, device: torch.device, channels_last: bool | None = None):
        self.device = device
        self.channels_last = device.type == "cpu" if channels_last is None else channels_last
        self.matrices: dict[int, torch.Tensor] = {}  # input side -> [299, side] on device
        self.buffers: dict[bool, torch.Tensor] = {}  # channels_last -> flat float32 storage, grown as needed

    def matrix(self, length: int) -> torch.Tensor:
        if length not in self.matrices:
            self.matrices[length] = pil_bicubic_matrix(length).to(self.device)
        return self.matrices[length]

    def output(self, batch: int, channels_last: bool = False) -> torch.Tensor:
        """float32 [batch, 3, 299, 299], a view of a reused buffer (channels-last strides if asked)."""
        size = batch * 3 * CLEAN_SIZE * CLEAN_SIZE
        buffer = self.buffers.get(channels_last)
        if buffer is None or buffer.numel() < size:
            buffer = self.buffers[channels_last] = torch.empty(size, device=self.device)
        flat = buffer[:size]
        if channels_last:
            return flat.view(batch, CLEAN_SIZE, CLEAN_SIZE, 3).permute(0, 3, 1, 2)
        return flat.view(batch, 3, CLEAN_SIZE, CLEAN_SIZE)

    def resize_into(self, x: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        """uint8 or float [B, 3, h, w] in [0, 255] -> ``out`` float32 [B, 3, 299, 299] clipped to [0, 255]."""
        x = x.to(self.device).float()  # uint8 crosses to a GPU, float32 is made there
        rows, cols = self.matrix(x.shape[2]), self.matrix(x.shape[3])  # [299, h], [299, w]
        with full_fp32_matmul():
            tall = rows @ x  # [B, 3, 299, w]
            torch.matmul(tall, cols.T, out=out)  # [B, 3, 299, 299]: one [B*3*299, w] x [w, 299] GEMM
        return out.clamp_(0, 255)

    def __call__(self, images: torch.Tensor | list[np.ndarray]) -> torch.Tensor:
        """A uint8 batch [B, 3, h, w], or a list of [3, h_i, w_i] arrays of mixed sizes -> [B, 3, 299, 299]."""
        out = self.output(len(images))
        if isinstance(images, torch.Tensor):
            return self.resize_into(images, out)
        for j, img in enumerate(images):
            self.resize_into(torch.from_numpy(img)[None], out[j : j + 1])
        return out

    def normalised(self, images: torch.Tensor | list[np.ndarray]) -> torch.Tensor:
        """Resized and normalised as ``InceptionV3W.forward`` does, ``(x - 128) / 128``: [B, 3, 299, 299]."""
        x = self(images)
        if not self.channels_last:
            return x.sub_(128).div_(128)
        return torch.sub(x, 128, out=self.output(len(x), channels_last=True)).div_(128)


def clean_resize(chw: np.ndarray) -> torch.Tensor:
    """One image, uint8 [3, h, w] -> float32 [3, 299, 299] on the CPU: clean-fid's ``build_resizer("clean")``."""
    return CleanResizer(torch.device("cpu"))(torch.from_numpy(np.ascontiguousarray(chw))[None])[0].clone()


def to_rgb(chw: np.ndarray) -> np.ndarray:
    return np.repeat(chw, 3, axis=0) if chw.shape[0] == 1 else chw


class Batches:
    """uint8 image batches ([3, H, W] arrays) of an ImageSource; files are decoded one batch ahead."""

    def __init__(self, source: ImageSource, batch_size: int, workers: int | None = None):
        if isinstance(source, torch.Tensor):
            if source.dtype != torch.uint8 or source.ndim != 4 or source.shape[1] not in (1, 3):
                raise MetricError(f"images must be uint8 [N, 1 or 3, H, W], got {source.dtype} {tuple(source.shape)}")
            self.tensor: torch.Tensor | None = source.detach()
            self.files: list[str] = []
            self.n = len(source)
        else:
            self.tensor = None
            self.files = list_folder(source)
            self.n = len(self.files)
        if self.n == 0:
            raise MetricError("no images to extract features from")
        self.batch_size = batch_size
        self.workers = workers or max(1, os.cpu_count() or 1)

    def __iter__(self) -> Iterator[torch.Tensor | list[np.ndarray]]:
        """Yields a uint8 tensor [B, 3, H, W] when a batch has one size, else a list of [3, h, w] arrays."""
        starts = range(0, self.n, self.batch_size)
        if self.tensor is not None:
            for lo in starts:
                batch = self.tensor[lo : lo + self.batch_size]
                yield batch.expand(-1, 3, -1, -1) if batch.shape[1] == 1 else batch
            return
        with ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="fid-decode") as pool:

            def submit(lo: int) -> list:
                return [pool.submit(load_file, f) for f in self.files[lo : lo + self.batch_size]]

            pending = submit(0)
            for k, _ in enumerate(starts):
                futures = pending
                if k + 1 < len(starts):
                    pending = submit(starts[k + 1])  # decode the next batch while this one runs
                images = [to_rgb(f.result()) for f in futures]
                if all(img.shape == images[0].shape for img in images):
                    yield torch.from_numpy(np.stack(images))
                else:
                    yield images


def extract_features(
    source: ImageSource, extractor: FeatureExtractor, batch_size: int = 64, workers: int | None = None
) -> np.ndarray:
    """Features float32 [N, 2048] of every image of ``source`` (uint8 tensor or folder), in order."""
    resize = CleanResizer(extractor.device)
    feats: list[np.ndarray] = []
    for batch in Batches(source, batch_size, workers):
        if extractor.mode != "clean":  # legacy_tensorflow: the network resizes (clean-fid passes [0, 255])
            if isinstance(batch, list):
                raise MetricError("legacy_tensorflow mode needs images of one size; the folder mixes sizes")
            feats.append(extractor(batch))
            continue
        feats.append(extractor.of_normalised(resize.normalised(batch)))  # buffers reused by the next batch
    return np.concatenate(feats)
