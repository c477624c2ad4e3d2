"""Sliced Wasserstein distance over Laplacian-pyramid patches (Karras et al. 2018)."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.ndimage
import torch
import torch.nn.functional as F
from metric_context import cpu_context

from harness.metrics import METRICS, swd
from harness.metrics.swd import GAUSS_5x5, laplacian_pyramid, level_resolutions, pyr_down, pyr_up


def images(n: int, seed: int, size: int = 32) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    low = F.interpolate(torch.rand(n, 3, 4, 4, generator=g), size=size, mode="bilinear", align_corners=False)
    return (low * 200 + torch.rand(n, 3, size, size, generator=g) * 55).to(torch.uint8)


def blurred(x: torch.Tensor) -> torch.Tensor:
    return F.avg_pool2d(F.pad(x.float(), (1, 1, 1, 1), mode="reflect"), 3, 1).round().to(torch.uint8)


def test_identical_sets_give_zero():
    a = images(24, 0)
    assert all(v == pytest.approx(0.0, abs=1e-9) for v in swd(a, a.clone()).values())


def test_levels_down_to_16_px():
    assert level_resolutions(64) == [64, 32, 16]
    assert sorted(swd(images(8, 0, 64), images(8, 1, 64), nhoods_per_image=16)) == [16, 32, 64]


def test_blur_and_noise_increase_the_distance():
    a = images(32, 0)
    blur = swd(a, blurred(a))
    assert blur[32] > 2 * swd(a, images(32, 1))[32]  # the finest band sees the blur
    noise = [
        np.mean(
            list(
                swd(
                    a,
                    (a.float() + s * torch.randn(a.shape, generator=torch.Generator().manual_seed(2)))
                    .clamp(0, 255)
                    .to(torch.uint8),
                ).values()
            )
        )
        for s in (4, 16, 48)
    ]
    assert 0 < noise[0] < noise[1] < noise[2]


def test_deterministic_given_seed():
    a, b = images(16, 0), images(16, 1)
    assert swd(a, b, seed=3) == swd(a, b, seed=3)
    assert swd(a, b, seed=3) != swd(a, b, seed=4)


def test_pyramid_matches_scipy_mirror_convolution():
    """pyr_down/pyr_up are the original's scipy.ndimage.convolve(mode='mirror') with the 5-tap binomial."""
    x = torch.rand(2, 3, 16, 16, dtype=torch.float64)
    k = GAUSS_5x5.numpy()[None, None]
    down = scipy.ndimage.convolve(x.numpy(), k, mode="mirror")[:, :, ::2, ::2]
    np.testing.assert_allclose(pyr_down(x).numpy(), down, atol=1e-12)
    up = np.zeros((2, 3, 32, 32))
    up[:, :, ::2, ::2] = x.numpy()
    np.testing.assert_allclose(pyr_up(x).numpy(), scipy.ndimage.convolve(up, k * 4, mode="mirror"), atol=1e-12)
    levels = laplacian_pyramid(x, 2)
    np.testing.assert_allclose((levels[0] + pyr_up(levels[1])).numpy(), x.numpy(), atol=1e-12)  # invertible


def test_metric_values_and_attrs():
    ref, gen = images(20, 0), images(12, 1)
    ctx = cpu_context(samples=lambda: gen, reference=ref, dataset_fingerprint="toy")
    values = {v.name: v for v in METRICS["swd"](nhoods_per_image=32).compute(ctx)}
    assert set(values) == {"swd", "swd_32", "swd_16"}
    assert values["swd"].value == pytest.approx((values["swd_32"].value + values["swd_16"].value) / 2)
    assert values["swd"].attrs["n_generated"] == 12 and values["swd_16"].attrs["resolution"] == 16
    assert values["swd"].attrs["reference_fingerprint"] == "toy"


def test_too_small_images_are_unavailable():
    tiny = images(4, 0, 8)
    ctx = cpu_context(image_shape=(3, 8, 8), samples=lambda: tiny, reference=tiny, dataset_fingerprint="toy")
    (value,) = METRICS["swd"]().compute(ctx)
    assert value.value is None and "16 px" in value.attrs["reason"]


def shapes_split(n: int = 384, resolution: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    """Two disjoint sets of ``shapes`` images: (a stand-in for a perfect model's samples, held-out)."""
    import components

    data = components.build("dataset", {"name": "shapes", "resolution": resolution, "num_images": n, "cache_dir": None})
    return data.images[: n // 2], data.images[n // 2 :]


def shift_mean(x: torch.Tensor, delta: float) -> torch.Tensor:
    """Move every pixel by ``delta`` on the [-1, 1] scale."""
    return (x.float() + delta * 127.5).round().clamp(0, 255).to(torch.uint8)


def scale_contrast(x: torch.Tensor, factor: float) -> torch.Tensor:
    """Scale each image's deviation from the set's per-channel mean by ``factor``."""
    mean = x.float().mean(dim=(0, 2, 3), keepdim=True)
    return ((x.float() - mean) * factor + mean).round().clamp(0, 255).to(torch.uint8)


def mean_swd(a: torch.Tensor, b: torch.Tensor, **kw) -> float:
    return float(np.mean(list(swd(a, b, **kw).values())))


def test_colour_and_contrast_errors_cost_against_the_reference_statistics():
    """Issue 10: a generated set whose mean is off by 0.2, or whose contrast is 0.7 of the data's, lies clearly
    above the floor (data against held-out data) with the reference normalisation; with the original per-set
    normalisation such errors are almost free."""
    samples, held_out = shapes_split()
    floor = mean_swd(samples, held_out)
    shifted, flat = mean_swd(shift_mean(samples, 0.2), held_out), mean_swd(scale_contrast(samples, 0.7), held_out)
    assert shifted > 3 * floor and flat > 3 * floor
    per_set = {"normalize": "per_set"}
    old_floor = mean_swd(samples, held_out, **per_set)
    assert mean_swd(shift_mean(samples, 0.2), held_out, **per_set) < 1.5 * old_floor  # the defect, kept selectable
    assert mean_swd(scale_contrast(samples, 0.7), held_out, **per_set) < 1.5 * old_floor
