"""Stems: the first and last layer of a network, mapping the image to a lower resolution and back
(simple diffusion Sec. 4, "downsample first"; PAPER.md Sec. 4).

A stem spec has ``factor`` (spatial downsampling), ``out_channels(in_channels)`` and ``make(in_channels)``;
the module has ``encode(x)`` ([B, C, H, W] -> [B, C', H / factor, W / factor]) and ``decode(h)`` (back).

- ``wavelet``: the 5/3 (LeGall / CDF 5/3, PyWavelets ``bior2.2``) DWT with periodic boundary, exactly
  invertible on sizes divisible by 2**levels; computed by lifting with torch ops (any device, batched,
  differentiable).
- ``patch``: a p x p convolution with stride p and a transposed convolution of the same shape.
- ``none``: identity.
"""

from __future__ import annotations

import math

import pywt
import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor, nn

from components.registry import Component

_BIOR22 = pywt.Wavelet("bior2.2")
DEC_LO = tuple(_BIOR22.dec_lo)  # analysis low-pass, 6 taps (PyWavelets' convention, leading zero)
DEC_HI = tuple(_BIOR22.dec_hi)  # analysis high-pass
REC_LO = tuple(_BIOR22.rec_lo)  # synthesis low-pass
REC_HI = tuple(_BIOR22.rec_hi)  # synthesis high-pass
SQRT2 = math.sqrt(2.0)
# The 5/3 transform by lifting (Sweldens; JPEG 2000 Part 1), periodic, along one axis with even samples e
# and odd samples o (e[k] = x[2k], o[k] = x[2k + 1]):
#   predict: d[k] = o[k] - (e[k] + e[k + 1]) / 2        update: s[k] = e[k] + (d[k - 1] + d[k]) / 4
# and PyWavelets' normalisation and sign: cA = sqrt(2) s, cD = -d / sqrt(2). This equals
# pywt.dwt(x, "bior2.2", mode="periodization") exactly (tests/test_stems.py compares to pywt for 1-3
# levels); the inverse runs the steps backwards. A handful of elementwise ops per axis: cheaper than a
# convolution with 4 channels, and autograd differentiates it as is.


def _lift(x: Tensor, dim: int) -> tuple[Tensor, Tensor]:
    """One periodic 5/3 analysis step along ``dim`` (-1 or -2): x -> (low, high), each half as long."""
    n = x.shape[dim]
    e, o = x.unflatten(dim, (n // 2, 2)).unbind(dim if dim < 0 else dim + 1)
    # the same arithmetic as d = o - 0.5 (e + e[k+1]), s = e + 0.25 (d[k-1] + d) (scaling by 2^-k is exact) in
    # fewer passes over memory: the sums accumulate into roll's fresh output, the scaled add is one kernel
    d = torch.add(o, torch.roll(e, -1, dim).add_(e), alpha=-0.5)
    s = torch.add(e, torch.roll(d, 1, dim).add_(d), alpha=0.25)
    return s.mul_(SQRT2), d * (-1.0 / SQRT2)


def _unlift(low: Tensor, high: Tensor, dim: int) -> Tensor:
    """Inverse of ``_lift``: (low, high) -> x, twice as long along ``dim``."""
    s, d = low * (1.0 / SQRT2), high * (-SQRT2)
    e = torch.add(s, torch.roll(d, 1, dim).add_(d), alpha=-0.25)  # s - 0.25 (d[k-1] + d), as in _lift
    o = torch.add(d, torch.roll(e, -1, dim).add_(e), alpha=0.5)  # d + 0.5 (e + e[k+1])
    return torch.stack([e, o], dim=dim).flatten(dim - 1 if dim < 0 else dim, dim if dim < 0 else dim + 1)


def dwt2(x: Tensor) -> Tensor:
    """One level of the periodic 2-D DWT: [B, C, H, W] -> [B, 4C, H/2, W/2], band-major channels
    (cA for all c, then cH, cV, cD), each equal to ``pywt.dwt2(x_c, "bior2.2", "periodization")``."""
    lo_w, hi_w = _lift(x, -1)  # low / high along W
    ll, hl = _lift(lo_w, -2)  # cA (low H, low W), cH (high H, low W)
    lh, hh = _lift(hi_w, -2)  # cV (low H, high W), cD
    return torch.cat([ll, hl, lh, hh], dim=1)


def idwt2(y: Tensor) -> Tensor:
    """Inverse of ``dwt2``: [B, 4C, h, w] (band-major) -> [B, C, 2h, 2w]."""
    ll, hl, lh, hh = y.chunk(4, dim=1)
    return _unlift(_unlift(ll, hl, -2), _unlift(lh, hh, -2), -1)


class WaveletTransform(nn.Module):
    """Multi-level 5/3 DWT (periodic boundary) as a stem; ``decode`` is its exact inverse.

    ``encode``: [B, C, H, W] -> [B, C * 4**L, H / 2**L, W / 2**L]. Channel order (coarse to fine, as
    ``pywt.wavedec2(x_c, "bior2.2", mode="periodization", level=L)``):

    - ``[0:C]``: the low-pass band cA_L of channel c at index c;
    - then the detail bands of level L, band-major: cH_L (channels ``C:2C``), cV_L, cD_L;
    - then for level l = L-1, ..., 1 the 3C detail channels of that level (same band-major order,
      index ``band * C + c``) space-to-depth reshaped onto the coarsest grid by
      ``pixel_unshuffle(r = 2**(L - l))``: channel ``(band * C + c) * r * r + i * r + j`` holds the
      pixel at offset (i, j) of each r x r cell. Level l occupies ``3 C 4**(L-l)`` channels.

    pywt's cH is high-pass along H (rows) and low-pass along W; cV the reverse; cD high-pass on both.
    The transform runs in the input's dtype with autocast off (it is exact and cheap).
    """

    def __init__(self, in_channels: int, levels: int):
        super().__init__()
        self.in_channels = in_channels
        self.levels = levels

    def _check(self, h: int, w: int) -> None:
        f = 2**self.levels
        if h % f or w % f:
            raise ValueError(
                f"wavelet stem with levels={self.levels} needs height and width divisible by {f}, got {h}x{w}"
            )

    def encode(self, x: Tensor) -> Tensor:
        self._check(*x.shape[-2:])
        with torch.autocast(x.device.type, enabled=False):
            low, details = x, []
            for _ in range(self.levels):
                y = dwt2(low)
                low, d = y[:, : x.shape[1]], y[:, x.shape[1] :]  # [B, C, ...], [B, 3C, ...]
                details.append(d)
            parts = [low] + [
                F.pixel_unshuffle(d, 2 ** (self.levels - 1 - i)) for i, d in reversed(list(enumerate(details)))
            ]
            return torch.cat(parts, dim=1)  # [B, C 4**L, H/2**L, W/2**L]

    def decode(self, h: Tensor) -> Tensor:
        c = self.in_channels
        if h.shape[1] != c * 4**self.levels:
            raise ValueError(f"wavelet decode expects {c * 4**self.levels} channels, got {h.shape[1]}")
        with torch.autocast(h.device.type, enabled=False):
            low, start = h[:, :c], c
            for level in range(self.levels, 0, -1):  # coarsest first
                r = 2 ** (self.levels - level)
                n = 3 * c * r * r
                d = F.pixel_shuffle(h[:, start : start + n], r) if r > 1 else h[:, start : start + n]
                start += n
                low = idwt2(torch.cat([low, d], dim=1))
            return low

    def forward(self, x: Tensor) -> Tensor:
        return self.encode(x)


class PatchStem(nn.Module):
    """p x p convolution with stride p (C -> C p^2) and a transposed convolution of the same shape back."""

    def __init__(self, in_channels: int, patch_size: int):
        super().__init__()
        self.patch_size = patch_size
        out = in_channels * patch_size**2
        self.down = nn.Conv2d(in_channels, out, patch_size, stride=patch_size)
        self.up = nn.ConvTranspose2d(out, in_channels, patch_size, stride=patch_size)

    def encode(self, x: Tensor) -> Tensor:
        h, w = x.shape[-2:]
        p = self.patch_size
        if h % p or w % p:
            raise ValueError(f"patch stem with patch_size={p} needs height and width divisible by {p}, got {h}x{w}")
        return self.down(x)  # [B, C p^2, H/p, W/p]

    def decode(self, h: Tensor) -> Tensor:
        return self.up(h)  # [B, C, H, W]

    def forward(self, x: Tensor) -> Tensor:
        return self.encode(x)


class IdentityStem(nn.Module):
    """No stem: the network works at image resolution."""

    def encode(self, x: Tensor) -> Tensor:
        return x

    def decode(self, h: Tensor) -> Tensor:
        return h

    def forward(self, x: Tensor) -> Tensor:
        return x


class Wavelet(Component):
    """5/3 wavelet stem (simple diffusion Sec. 4): L-level DWT, subbands on channels, C -> C 4**L."""

    levels: int = Field(1, ge=1, le=8)  # number of DWT levels; spatial factor 2**levels

    @property
    def factor(self) -> int:
        return 2**self.levels

    def out_channels(self, in_channels: int) -> int:
        return in_channels * 4**self.levels

    def make(self, in_channels: int) -> WaveletTransform:
        return WaveletTransform(in_channels, self.levels)

    def instantiate(self) -> WaveletTransform:
        return self.make(3)


class Patch(Component):
    """Patch-conv stem (simple diffusion Sec. 4): stride-p conv, transposed conv at the end."""

    patch_size: int = Field(2, ge=1)  # p; spatial factor p, channels C -> C p^2

    @property
    def factor(self) -> int:
        return self.patch_size

    def out_channels(self, in_channels: int) -> int:
        return in_channels * self.patch_size**2

    def make(self, in_channels: int) -> PatchStem:
        return PatchStem(in_channels, self.patch_size)

    def instantiate(self) -> PatchStem:
        return self.make(3)


class NoStem(Component):
    """Identity stem: the network's first convolution sees the image."""

    @property
    def factor(self) -> int:
        return 1

    def out_channels(self, in_channels: int) -> int:
        return in_channels

    def make(self, in_channels: int) -> IdentityStem:
        return IdentityStem()

    def instantiate(self) -> IdentityStem:
        return self.make(3)


STEMS = {
    "wavelet": Wavelet,
    "patch": Patch,
    "none": NoStem,
}
