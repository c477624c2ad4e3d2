"""The training split as a view of the dataset's rows: one batch gathered at a time, no copy of the split.

A dataset's images are uint8 [N, C, H, W] in host memory, or a memory map of an ``array`` dataset
(``harness.prepare``) that may be larger than memory. Copying the training split (``images[train_idx]``) would
read all of it at once, and computing its mean image in float32 would take four times its size; here a batch
reads only its own rows, and the mean is summed chunk by chunk.
"""

from __future__ import annotations

import torch
from torch import Tensor

DEVICE_SHARE = 0.25  # the dataset moves to an accelerator when it takes at most this share of its memory
MEAN_CHUNK = 4096  # images per chunk of the mean image


def place(images: Tensor, device: torch.device) -> Tensor:
    """``images`` on ``device`` when it fits well there (one copy, no per-step transfer), else where it is."""
    if device.type == "cpu" or images.device == device:
        return images
    if device.type == "cuda":
        total = torch.cuda.get_device_properties(device).total_memory
        if images.numel() * images.element_size() > DEVICE_SHARE * total:
            return images  # gathered batch by batch and moved (``ImageRows.__getitem__``)
    return images.to(device)


class ImageRows:
    """``images`` uint8 [N, C, H, W] seen through ``rows`` [M]: ``view[idx]`` is ``images[rows[idx]]``
    [len(idx), C, H, W], gathered where the images are and moved to ``device``."""

    def __init__(self, images: Tensor, rows: list[int] | Tensor, device: torch.device):
        self.images = images
        self.rows = torch.as_tensor(rows, dtype=torch.long, device=images.device)  # [M]
        self.device = device

    def __len__(self) -> int:
        return len(self.rows)

    @property
    def shape(self) -> tuple[int, ...]:
        return (len(self.rows), *self.images.shape[1:])

    def __getitem__(self, idx: Tensor) -> Tensor:
        picked = self.images[self.rows[idx.to(self.rows.device)]]  # [b, C, H, W]
        return picked.to(self.device, non_blocking=True)


def mean_image(images: Tensor | ImageRows, chunk: int = MEAN_CHUNK) -> Tensor:
    """float64 [C, H, W]: the mean over the first axis of uint8 ``images``, summed ``chunk`` images at a time."""
    total = None
    for start in range(0, len(images), chunk):
        part = images[torch.arange(start, min(start + chunk, len(images)))].double().sum(0)  # [C, H, W]
        total = part if total is None else total + part.to(total.device)
    if total is None:
        raise ValueError("the mean image of no images")
    return total / len(images)
