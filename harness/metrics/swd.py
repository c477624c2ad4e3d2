"""Sliced Wasserstein distance over Laplacian-pyramid patches (Karras et al. 2018, "Progressive growing
of GANs", Sec. 5 and Appendix D; their ``metrics/sliced_wasserstein.py``). Needs no weights.

Per pyramid level (full resolution, then halving down to 16 px): 128 random 7 x 7 neighbourhoods per
image, descriptors normalised per channel, then 4 x 128 random unit directions, the sorted projections of
the two sets compared pointwise, the absolute differences averaged. Values are multiplied by 1e3 as in the
original. The pyramid is the 5-tap binomial (cv2.pyrDown/pyrUp) one with mirror padding; the last level is
the Gaussian residual.

Normalisation (``normalize``): ``reference`` (the default) normalises BOTH sets with the reference set's
per-channel mean and std at each level, so a global colour shift or a loss of contrast in the generated set
costs what it should; ``per_set`` is the original's choice (each set by its own statistics), under which such
errors cost nothing; keep it only to compare with numbers published that way.

Deviations from the original, both to make the number a function of the two sets and the seed alone:
patch positions and directions come from a generator seeded with ``seed`` (the same positions for both
sets, so identical sets give exactly 0), and the two sets use the same number of images (the first
``min(N_generated, N_reference, num_images)`` of each).
"""

from __future__ import annotations

from typing import ClassVar, Literal

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field

from harness.metrics.base import EvalContext, Metric, MetricError, MetricValue, unavailable

_BINOMIAL = torch.tensor([1.0, 4.0, 6.0, 4.0, 1.0], dtype=torch.float64)
GAUSS_5x5 = torch.outer(_BINOMIAL, _BINOMIAL) / 256.0
MIN_RESOLUTION = 16


def _blur(x: torch.Tensor, gain: float = 1.0) -> torch.Tensor:
    """5 x 5 binomial filter per channel, mirror ('reflect') padding, same size. x: [N, C, H, W]."""
    c = x.shape[1]
    kernel = (GAUSS_5x5 * gain).to(x).expand(c, 1, 5, 5)
    return F.conv2d(F.pad(x, (2, 2, 2, 2), mode="reflect"), kernel, groups=c)


def pyr_down(x: torch.Tensor) -> torch.Tensor:
    return _blur(x)[:, :, ::2, ::2]


def pyr_up(x: torch.Tensor) -> torch.Tensor:
    n, c, h, w = x.shape
    up = torch.zeros(n, c, 2 * h, 2 * w, dtype=x.dtype, device=x.device)
    up[:, :, ::2, ::2] = x
    return _blur(up, gain=4.0)


def laplacian_pyramid(x: torch.Tensor, num_levels: int) -> list[torch.Tensor]:
    """[full-res band-pass, half-res band-pass, ..., low-pass residual]."""
    levels = [x]
    for _ in range(1, num_levels):
        levels.append(pyr_down(levels[-1]))
        h, w = levels[-2].shape[2:]
        levels[-2] = levels[-2] - pyr_up(levels[-1])[:, :, :h, :w]  # crop: odd sizes round up
    return levels


def level_resolutions(height: int) -> list[int]:
    res, out = height, []
    while res >= MIN_RESOLUTION:
        out.append(res)
        res = (res + 1) // 2  # pyr_down of an odd size keeps the last row
    return out


def patch_positions(n: int, size: int, nhood_size: int, per_image: int, gen: torch.Generator) -> torch.Tensor:
    """Random neighbourhood centres [n * per_image, 2] (y, x) in a size x size level, per_image per image."""
    half = nhood_size // 2
    return torch.randint(half, size - half, (n * per_image, 2), generator=gen)


def raw_descriptors(level: torch.Tensor, centres: torch.Tensor, nhood_size: int) -> torch.Tensor:
    """k x k neighbourhoods [P, C, k, k] of level [n, C, H, W] at centres [n * per_image, 2]."""
    n, c, h, w = level.shape
    per_image = centres.shape[0] // n
    half = nhood_size // 2
    img = torch.arange(centres.shape[0]) // per_image
    d = torch.arange(-half, half + 1)
    y = centres[:, 0, None, None, None] + d[None, None, :, None]
    x = centres[:, 1, None, None, None] + d[None, None, None, :]
    flat = ((img[:, None, None, None] * c + torch.arange(c)[None, :, None, None]) * h + y) * w + x
    return level.reshape(-1)[flat]


Normalize = Literal["reference", "per_set"]


def channel_stats(desc: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and std of descriptors [P, C, k, k] over all of them and their pixels."""
    return desc.mean(dim=(0, 2, 3), keepdim=True), desc.std(dim=(0, 2, 3), keepdim=True, unbiased=False)


def finalize(desc: torch.Tensor, stats: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
    """[P, C, k, k] -> [P, C * k * k], normalised per channel by ``stats`` (default: the set's own, as the
    original's ``finalize_descriptors``)."""
    mean, std = stats if stats is not None else channel_stats(desc)
    return ((desc - mean) / std.clamp_min(1e-12)).reshape(desc.shape[0], -1)


def sliced_wasserstein(
    a: torch.Tensor, b: torch.Tensor, repeats: int, dirs_per_repeat: int, gen: torch.Generator
) -> float:
    """Mean over random unit directions of the mean |sorted(a @ dir) - sorted(b @ dir)|."""
    results = []
    for _ in range(repeats):
        dirs = torch.randn(a.shape[1], dirs_per_repeat, generator=gen, dtype=torch.float64).to(a)
        dirs = dirs / dirs.norm(dim=0, keepdim=True)
        # [directions, P], sorted along P; numpy's sort is several times faster than torch's on CPU
        pa = np.sort((dirs.T @ a.T).numpy(), axis=1)
        pb = np.sort((dirs.T @ b.T).numpy(), axis=1)
        results.append(np.abs(pa - pb).mean(dtype=np.float64))
    return float(np.mean(results))


def set_descriptors(
    images: torch.Tensor,
    resolutions: list[int],
    centres: list[torch.Tensor],
    nhood_size: int,
    chunk: int = 256,
) -> list[torch.Tensor]:
    """Raw descriptors [P, C, k, k] per level of one image set, the pyramid built ``chunk`` images at a time."""
    per_image = centres[0].shape[0] // len(images)
    parts: list[list[torch.Tensor]] = [[] for _ in resolutions]
    for lo in range(0, len(images), chunk):
        pyramid = laplacian_pyramid(images[lo : lo + chunk].to(torch.float32), len(resolutions))
        for lod, level in enumerate(pyramid):
            sel = centres[lod][lo * per_image : (lo + len(level)) * per_image]
            parts[lod].append(raw_descriptors(level, sel, nhood_size))
    return [torch.cat(p) for p in parts]


def swd(
    a: torch.Tensor,
    b: torch.Tensor,
    seed: int = 0,
    nhood_size: int = 7,
    nhoods_per_image: int = 128,
    dir_repeats: int = 4,
    dirs_per_repeat: int = 128,
    normalize: Normalize = "reference",
) -> dict[int, float]:
    """SWD x 1e3 per pyramid level {resolution: value} between image sets a and b (the reference):
    [N, C, H, W] each, same N."""
    if a.shape != b.shape:
        raise MetricError(f"SWD needs sets of equal shape, got {tuple(a.shape)} and {tuple(b.shape)}")
    if min(a.shape[2:]) < MIN_RESOLUTION or a.shape[2] != a.shape[3]:
        raise MetricError(f"SWD needs square images of at least {MIN_RESOLUTION} px, got {tuple(a.shape[2:])}")
    resolutions = level_resolutions(a.shape[2])
    gens = [torch.Generator().manual_seed(seed * 1009 + lod) for lod in range(len(resolutions))]
    centres = [
        patch_positions(len(a), res, nhood_size, nhoods_per_image, g) for res, g in zip(resolutions, gens, strict=True)
    ]
    desc_b = set_descriptors(b, resolutions, centres, nhood_size)
    stats = [channel_stats(d) if normalize == "reference" else None for d in desc_b]
    desc_a = [
        finalize(d, st) for d, st in zip(set_descriptors(a, resolutions, centres, nhood_size), stats, strict=True)
    ]
    desc_b = [finalize(d, st) for d, st in zip(desc_b, stats, strict=True)]
    return {
        res: 1e3 * sliced_wasserstein(da, db, dir_repeats, dirs_per_repeat, g)
        for res, da, db, g in zip(resolutions, desc_a, desc_b, gens, strict=True)
    }


class Swd(Metric):
    """Sliced Wasserstein distance (x 1e3) of generated vs reference images, per level and averaged."""

    outputs: ClassVar[tuple[str, ...]] = ("swd",)  # plus swd_<r> for each pyramid level r (px)
    compares_samples: ClassVar[bool] = True

    nhood_size: int = Field(default=7, ge=1)  # neighbourhood (patch) side, px
    nhoods_per_image: int = Field(default=128, ge=1)  # patches per image and level
    dir_repeats: int = Field(default=4, ge=1)  # batches of random directions
    dirs_per_repeat: int = Field(default=128, ge=1)  # directions per batch
    num_images: int = Field(default=16384, ge=2)  # at most this many images per set (PGGAN: 16k)
    normalize: Normalize = "reference"  # descriptors normalised by the reference set's stats, or "per_set"

    def output_names(self, resolution: int) -> tuple[str, ...]:
        """``swd`` and ``swd_<r>`` for each pyramid level r (pixels: the resolution, halved down to 16)."""
        return (*self.outputs, *(f"swd_{r}" for r in level_resolutions(resolution)))

    def compute(self, ctx: EvalContext) -> list[MetricValue]:
        gen = ctx.samples().detach().cpu()
        n = min(len(gen), len(ctx.reference), self.num_images)
        attrs = {
            "n_generated": n,
            "n_reference": n,
            "reference": ctx.reference_name,
            "reference_fingerprint": ctx.dataset_fingerprint,
            "seed": ctx.seed,
            "scale": 1e3,
            "convention": f"Karras et al. 2018 (PGGAN) SWD x 1e3, descriptors normalised {self.normalize}",
            **self.model_dump(),
        }
        try:
            levels = swd(
                gen[:n],
                ctx.reference[:n].cpu(),
                ctx.seed,
                self.nhood_size,
                self.nhoods_per_image,
                self.dir_repeats,
                self.dirs_per_repeat,
                self.normalize,
            )
        except MetricError as err:
            return [unavailable("swd", str(err), **attrs)]
        values = [MetricValue(f"swd_{res}", v, None, {**attrs, "resolution": res}) for res, v in levels.items()]
        mean = sum(levels.values()) / len(levels)
        return [MetricValue("swd", mean, None, {**attrs, "levels": sorted(levels)}), *values]
