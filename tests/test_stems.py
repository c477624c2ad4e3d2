"""Stems (simple diffusion Sec. 4): the 5/3 wavelet against PyWavelets, exact inverses, shapes, errors."""

from __future__ import annotations

import numpy as np
import pytest
import pywt
import torch

from components.registry import validate_spec
from components.stems import DEC_HI, DEC_LO, REC_HI, REC_LO, STEMS


def make(name: str, **params) -> torch.nn.Module:
    return validate_spec("stem", STEMS, {"name": name, **params}).instantiate()


def expected_channels(x: np.ndarray, levels: int) -> np.ndarray:
    """The documented channel order built from pywt.wavedec2: [B, C, H, W] -> [B, C 4**L, H/2**L, W/2**L]."""
    per_image = []
    for image in x:
        coeffs = [pywt.wavedec2(xc, "bior2.2", mode="periodization", level=levels) for xc in image]
        parts = [np.stack([co[0] for co in coeffs])]  # [C, h, w]
        for k in range(1, levels + 1):  # level L, L-1, ..., 1
            bands = np.stack([co[k][band] for band in range(3) for co in coeffs])  # [3C, h r, w r] band-major
            r = 2 ** (k - 1)
            t = torch.from_numpy(bands)[None]
            parts.append(torch.nn.functional.pixel_unshuffle(t, r)[0].numpy() if r > 1 else bands)
        per_image.append(np.concatenate(parts))
    return np.stack(per_image)


def test_filter_taps_are_bior22() -> None:
    w = pywt.Wavelet("bior2.2")
    assert DEC_LO == tuple(w.dec_lo) and DEC_HI == tuple(w.dec_hi)
    assert REC_LO == tuple(w.rec_lo) and REC_HI == tuple(w.rec_hi)
    assert np.allclose(DEC_LO[1:], np.array([-1, 2, 6, 2, -1]) * np.sqrt(2) / 8)  # LeGall 5/3 analysis


@pytest.mark.parametrize("levels", [1, 2, 3])
def test_wavelet_matches_pywavelets(levels: int) -> None:
    torch.manual_seed(levels)
    x = torch.randn(2, 3, 64, 40, dtype=torch.float64)
    stem = make("wavelet", levels=levels)
    want = expected_channels(x.numpy(), levels)
    got64 = stem.encode(x)
    assert got64.shape == (2, 3 * 4**levels, 64 // 2**levels, 40 // 2**levels)
    np.testing.assert_allclose(got64.numpy(), want, atol=1e-12, rtol=0)
    got32 = stem.encode(x.float())
    np.testing.assert_allclose(got32.numpy(), want, atol=1e-5 * 2**levels, rtol=1e-5)
    for c in range(3):  # the low-pass contract
        low = pywt.wavedec2(x[1, c].numpy(), "bior2.2", mode="periodization", level=levels)[0]
        np.testing.assert_allclose(got64[1, c].numpy(), low, atol=1e-12, rtol=0)


@pytest.mark.parametrize("levels", [1, 2, 3])
def test_wavelet_decode_matches_pywavelets_inverse(levels: int) -> None:
    y = torch.randn(1, 3 * 4**levels, 4, 4, dtype=torch.float64)
    x = make("wavelet", levels=levels).decode(y)
    assert torch.allclose(make("wavelet", levels=levels).encode(x), y, atol=1e-12)


@pytest.mark.parametrize("spec", [{"name": "wavelet", "levels": L} for L in (1, 2, 3)] + [{"name": "none"}])
def test_exact_round_trip(spec: dict) -> None:
    stem = validate_spec("stem", STEMS, spec).instantiate()
    x = torch.rand(3, 3, 32, 24) * 2 - 1
    assert (stem.decode(stem.encode(x)) - x).abs().max().item() <= 1e-5
    x64 = x.double()
    assert (stem.decode(stem.encode(x64)) - x64).abs().max().item() <= 1e-12


def test_wavelet_tiny_sizes_wrap_like_pywavelets() -> None:
    """Filters longer than the signal: the periodisation wraps more than once (2 x 2 at the last level)."""
    x = torch.randn(1, 1, 4, 4, dtype=torch.float64)
    with pytest.warns(UserWarning):
        want = pywt.wavedec2(x[0, 0].numpy(), "bior2.2", mode="periodization", level=2)[0]
    got = make("wavelet", levels=2).encode(x)
    np.testing.assert_allclose(got[0, 0].numpy(), want, atol=1e-12)


@pytest.mark.parametrize("name", sorted(STEMS))
def test_stem_shapes_and_factor(name: str) -> None:
    spec = validate_spec("stem", STEMS, name)
    stem = spec.make(4)
    x = torch.randn(2, 4, 16, 32)
    h = stem.encode(x)
    assert h.shape == (2, spec.out_channels(4), 16 // spec.factor, 32 // spec.factor)
    assert stem.decode(h).shape == x.shape
    assert isinstance(spec.instantiate(), torch.nn.Module)


@pytest.mark.parametrize("name", sorted(STEMS))
def test_stem_backward_and_bf16_autocast(name: str) -> None:
    stem = validate_spec("stem", STEMS, name).instantiate()
    x = torch.randn(2, 3, 16, 16, requires_grad=True)
    stem.decode(stem.encode(x)).square().sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = stem.decode(stem.encode(x))
    assert out.shape == x.shape and torch.isfinite(out).all()


@pytest.mark.parametrize(("spec", "size"), [({"name": "wavelet", "levels": 2}, 30), ({"name": "patch"}, 15)])
def test_bad_sizes_give_a_clear_error(spec: dict, size: int) -> None:
    stem = validate_spec("stem", STEMS, spec).instantiate()
    with pytest.raises(ValueError, match="divisible by"):
        stem.encode(torch.randn(1, 3, size, 32))


def test_spec_errors_name_the_key() -> None:
    with pytest.raises(ValueError, match="levels"):
        validate_spec("stem", STEMS, {"name": "wavelet", "levels": 0})
    with pytest.raises(ValueError, match="patch_sise"):
        validate_spec("stem", STEMS, {"name": "patch", "patch_sise": 2})


@pytest.mark.parametrize("levels", [1, 2])
def test_wavelet_gradients_are_exact(levels: int) -> None:
    """The custom backward (the adjoint periodic convolution) against finite differences."""
    stem = validate_spec("stem", STEMS, {"name": "wavelet", "levels": levels}).make(2)
    x = torch.randn(1, 2, 8, 8, dtype=torch.float64, requires_grad=True)
    h = torch.randn(1, 2 * 4**levels, 8 // 2**levels, 8 // 2**levels, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(stem.encode, (x,))
    assert torch.autograd.gradcheck(stem.decode, (h,))
