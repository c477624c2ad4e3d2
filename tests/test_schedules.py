"""Noise schedules against hand-written references (simple diffusion Sec. 3.1, PAPER.md Sec. 1)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import components
from components.schedules import SCHEDULES, alpha_sigma

T = np.linspace(0.0, 1.0, 101)


def ref_cosine(t, lmin=-15.0, lmax=15.0):
    """-2 log tan(t_min + t (t_max - t_min)), written with numpy (not the code under test)."""
    t_min = np.arctan(np.exp(-lmax / 2))
    t_max = np.arctan(np.exp(-lmin / 2))
    return -2.0 * np.log(np.tan(t_min + np.asarray(t, dtype=np.float64) * (t_max - t_min)))


def logsnr(spec, t) -> np.ndarray:
    sched = components.build("schedule", spec)
    return sched.logsnr(torch.as_tensor(t, dtype=torch.float64)).numpy()


def test_cosine_endpoints_and_midpoint():
    lam = logsnr("cosine", [0.0, 0.5, 1.0])
    np.testing.assert_allclose(lam, [15.0, 0.0, -15.0], atol=1e-9)


def test_cosine_matches_reference_and_decreases():
    lam = logsnr("cosine", T)
    np.testing.assert_allclose(lam, ref_cosine(T), rtol=1e-10, atol=1e-10)
    assert np.all(np.diff(lam) < 0)


def test_cosine_custom_range():
    lam = logsnr({"name": "cosine", "logsnr_min": -10, "logsnr_max": 5}, [0.0, 1.0])
    np.testing.assert_allclose(lam, [5.0, -10.0], atol=1e-9)


def test_alpha_sigma_variance_preserving():
    lam = torch.linspace(-20, 20, 81, dtype=torch.float64)
    alpha, sigma = alpha_sigma(lam)
    np.testing.assert_allclose((alpha**2 + sigma**2).numpy(), 1.0, atol=1e-12)
    np.testing.assert_allclose((alpha**2).numpy(), 1.0 / (1.0 + np.exp(-lam.numpy())), rtol=1e-12)
    # log(alpha^2 / sigma^2) recovers lambda
    np.testing.assert_allclose(np.log(alpha.numpy() ** 2 / sigma.numpy() ** 2), lam.numpy(), atol=1e-8)


@pytest.mark.parametrize(("d", "shift"), [(64, 0.0), (128, -1.386), (256, -2.773), (512, -4.159)])
def test_shifted_cosine_clip_before_shift(d, shift):
    spec = {"name": "shifted_cosine", "resolution": d}
    sched = components.build("schedule", spec)
    assert sched.shift == pytest.approx(shift, abs=1e-3)
    assert sched.shift == pytest.approx(2 * math.log(64 / d), abs=1e-12)
    lam = logsnr(spec, T)
    np.testing.assert_allclose(lam, ref_cosine(T) + 2 * math.log(64 / d), atol=1e-9)
    # default = clip first, then shift: the range is [-15 + s, 15 + s]
    np.testing.assert_allclose([lam[0], lam[-1]], [15.0 + shift, -15.0 + shift], atol=2e-3)
    assert np.all(np.diff(lam) < 0)


@pytest.mark.parametrize("base", [32, 128])
def test_shifted_cosine_base_resolution(base):
    lam = logsnr({"name": "shifted_cosine", "base_resolution": base, "resolution": 256}, T)
    np.testing.assert_allclose(lam, ref_cosine(T) + 2 * math.log(base / 256), atol=1e-9)


@pytest.mark.parametrize("d", [128, 256, 512])
def test_shifted_cosine_clip_after_shift(d):
    """Documented: ``after_shift`` rescales t so the *shifted* cosine spans exactly [min, max], i.e. it is
    the unclipped cosine -2 log tan(u) plus s, u running over [atan(e^{-(max-s)/2}), atan(e^{-(min-s)/2})]."""
    s = 2 * math.log(64 / d)
    lam = logsnr({"name": "shifted_cosine", "resolution": d, "clip": "after_shift"}, T)
    np.testing.assert_allclose([lam[0], lam[-1]], [15.0, -15.0], atol=1e-9)
    assert lam.max() <= 15.0 + 1e-9 and lam.min() >= -15.0 - 1e-9
    assert np.all(np.diff(lam) < 0)
    u_min, u_max = math.atan(math.exp(-(15.0 - s) / 2)), math.atan(math.exp(-(-15.0 - s) / 2))
    u = u_min + T * (u_max - u_min)
    np.testing.assert_allclose(lam, -2 * np.log(np.tan(u)) + s, atol=1e-9)
    # so in the interior it is "cosine + s" at a (slightly) rescaled time, not the before-shift schedule
    before = logsnr({"name": "shifted_cosine", "resolution": d}, T)
    assert not np.allclose(lam, before)
    # the rescaling barely moves the interior: at t = 0.5 both are close to s
    assert lam[50] == pytest.approx(s, abs=0.05)


def ref_interpolated(t, d, low=32, high=256, orientation="pseudocode"):
    t = np.asarray(t, dtype=np.float64)
    lam_low = ref_cosine(t) + 2 * np.log(low / d)
    lam_high = ref_cosine(t) + 2 * np.log(high / d)
    if orientation == "pseudocode":
        return t * lam_low + (1 - t) * lam_high
    return t * lam_high + (1 - t) * lam_low


@pytest.mark.parametrize("d", [64, 512])
def test_interpolated_shifted_pseudocode(d):
    lam = logsnr({"name": "interpolated_shifted", "resolution": d}, [0.0, 0.5, 1.0])
    # by hand: t = 0 -> shifted(high)(0); t = 1 -> shifted(low)(1); t = 0.5 -> mean of the two shifts
    expected = [15 + 2 * math.log(256 / d), math.log(32 / d) + math.log(256 / d), -15 + 2 * math.log(32 / d)]
    np.testing.assert_allclose(lam, expected, atol=1e-9)
    np.testing.assert_allclose(
        logsnr({"name": "interpolated_shifted", "resolution": d}, T), ref_interpolated(T, d), atol=1e-9
    )


@pytest.mark.parametrize("d", [64, 512])
def test_interpolated_shifted_printed(d):
    spec = {"name": "interpolated_shifted", "resolution": d, "orientation": "printed"}
    lam = logsnr(spec, [0.0, 0.5, 1.0])
    expected = [15 + 2 * math.log(32 / d), math.log(32 / d) + math.log(256 / d), -15 + 2 * math.log(256 / d)]
    np.testing.assert_allclose(lam, expected, atol=1e-9)
    np.testing.assert_allclose(logsnr(spec, T), ref_interpolated(T, d, orientation="printed"), atol=1e-9)


def test_interpolated_default_puts_strong_shift_at_high_noise():
    spec = {"name": "interpolated_shifted", "resolution": 512}
    pseudo = logsnr(spec, [0.9])[0]
    printed = logsnr({**spec, "orientation": "printed"}, [0.9])[0]
    assert pseudo < printed  # low base (32) = stronger shift = lower logSNR near t = 1


@pytest.mark.parametrize("name", sorted(SCHEDULES))
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_shapes_preserved(name, dtype):
    sched = components.build("schedule", name)
    for shape in [(), (7,), (2, 3)]:
        t = torch.rand(shape, dtype=dtype)
        out = sched.logsnr(t)
        assert out.shape == t.shape
        assert out.dtype == dtype
        assert torch.isfinite(out).all()
