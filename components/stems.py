"""Stems: the first and last layer of a network, mapping the image to a lower resolution and back
(simple diffusion Sec. 4, "downsample first"; PAPER.md Sec. 4).

A stem spec has ``factor`` (spatial downsampling), ``out_channels(in_channels)`` and ``make(in_channels)``;
the module has ``encode(x)`` ([B, C, H, W] -> [B, C', H / factor, W / factor]) and ``decode(h)`` (back).

- ``wavelet``: the 5/3 (LeGall / CDF 5/3, PyWavelets ``bior2.2``) DWT with periodic boundary, exactly
  invertible on sizes divisible by 2**levels; computed with torch convolutions (any device, batched,
  differentiable).
- ``patch``: a p x p convolution with stride p and a transposed convolution of the same shape.
- ``none``: identity.
"""

from __future__ import annotations

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
# Periodization, matched to pywt.dwt / pywt.idwt(mode="periodization") (tests/test_stems.py):
#   analysis:  c[k] = sum_j h[j] x[(2k + 3 - j) mod N]
#   synthesis: x[n] = sum over (k, j) with 2k + j == n + 2 (mod N) of c[k] g[j]
# Written in polyphase form (x_a[p] = x[2p + a]) both become 3-tap correlations on the half-size grid
# with one pixel of periodic padding:
#   c[k]        = sum_{a, u} h[5 - a - 2u] x_a[(k - 1 + u) mod N/2]
#   x_a[p]      = sum_{u}    g[a + 4 - 2u] c[(p - 1 + u) mod N/2]
# so each 2-D level is one dense 3x3 convolution with 4 input and 4 output channels per image channel.


def _band_filters(lo: tuple[float, ...], hi: tuple[float, ...]) -> list[tuple[Tensor, Tensor]]:
    """(filter along H, filter along W) per band in PyWavelets' order: aa, da, ad, dd (a = low, d = high;
    pywt's cA, cH, cV, cD)."""
    lo_t, hi_t = torch.tensor(lo, dtype=torch.float64), torch.tensor(hi, dtype=torch.float64)
    return [(lo_t, lo_t), (hi_t, lo_t), (lo_t, hi_t), (hi_t, hi_t)]


def analysis_kernel() -> Tensor:
    """[4 bands, 4 phases (a * 2 + b), 3, 3]: weight[band, ab, u, v] = R[5 - a - 2u] S[5 - b - 2v]."""
    weight = torch.zeros(4, 4, 3, 3, dtype=torch.float64)
    u = torch.arange(3)
    for band, (r, s) in enumerate(_band_filters(DEC_LO, DEC_HI)):
        for a in range(2):
            for b in range(2):
                weight[band, a * 2 + b] = torch.outer(r[5 - a - 2 * u], s[5 - b - 2 * u])
    return weight


def synthesis_kernel() -> Tensor:
    """[4 phases (a * 2 + b), 4 bands, 3, 3]: weight[ab, band, u, v] = R[a + 4 - 2u] S[b + 4 - 2v]."""
    weight = torch.zeros(4, 4, 3, 3, dtype=torch.float64)
    u = torch.arange(3)
    for band, (r, s) in enumerate(_band_filters(REC_LO, REC_HI)):
        for a in range(2):
            for b in range(2):
                weight[a * 2 + b, band] = torch.outer(r[a + 4 - 2 * u], s[b + 4 - 2 * u])
    return weight


class PeriodicConv3x3(torch.autograd.Function):
    """y = conv2d(circular_pad(x, 1), weight) for a fixed 3x3 kernel [out, in, 3, 3].

    Its adjoint is the same operation with the kernel transposed and flipped, so the backward pass is a
    forward convolution too (on CPU, ``convolution_backward`` with 4 channels is several times slower)."""

    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor) -> Tensor:  # type: ignore[override]
        ctx.save_for_backward(weight)
        return F.conv2d(F.pad(x, (1, 1, 1, 1), mode="circular"), weight)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None]:  # type: ignore[override]
        (weight,) = ctx.saved_tensors
        return PeriodicConv3x3.apply(grad, weight.transpose(0, 1).flip(-2, -1)), None


def dwt2(x: Tensor, analysis: Tensor) -> Tensor:
    """One level of the periodic 2-D DWT: [B, C, H, W] -> [B, 4C, H/2, W/2], band-major channels
    (cA for all c, then cH, cV, cD), each equal to ``pywt.dwt2(x_c, "bior2.2", "periodization")``."""
    b, c, h, w = x.shape
    phases = F.pixel_unshuffle(x.reshape(b * c, 1, h, w), 2)  # [BC, 4, H/2, W/2]
    y = PeriodicConv3x3.apply(phases, analysis.to(x.dtype))  # [BC, 4, H/2, W/2]
    return y.view(b, c, 4, h // 2, w // 2).transpose(1, 2).reshape(b, 4 * c, h // 2, w // 2)


def idwt2(y: Tensor, synthesis: Tensor) -> Tensor:
    """Inverse of ``dwt2``: [B, 4C, h, w] (band-major) -> [B, C, 2h, 2w]."""
    b, c4, h, w = y.shape
    c = c4 // 4
    y = y.view(b, 4, c, h, w).transpose(1, 2).reshape(b * c, 4, h, w)  # [BC, 4 bands, h, w]
    phases = PeriodicConv3x3.apply(y, synthesis.to(y.dtype))  # [BC, 4, h, w]
    return F.pixel_shuffle(phases, 2).view(b, c, 2 * h, 2 * w)


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
        self.register_buffer("analysis", analysis_kernel(), persistent=False)  # float64
        self.register_buffer("synthesis", synthesis_kernel(), persistent=False)

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
                y = dwt2(low, self.analysis)
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
                low = idwt2(torch.cat([low, d], dim=1), self.synthesis)
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
