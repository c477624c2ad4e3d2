"""FID/KID through the full clean-fid path, with a stand-in TorchScript feature network (no downloads)."""

from __future__ import annotations

import pathlib

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from cleanfid import fid as cleanfid_fid
from cleanfid.inception_torchscript import InceptionV3W
from PIL import Image

import harness.metrics.fid as fid_module
from components.registry import validate_spec
from harness.metrics import METRICS, EvalContext, FidOptions, MetricError, compute_fid, inception, preflight
from harness.metrics.features import extract_features
from harness.metrics.fid import Statistics, frechet_distance, kernel_distance
from harness.metrics.standin import save_standin


@pytest.fixture(autouse=True)
def offline(monkeypatch, tmp_path):
    """No environment weights, an empty clean-fid cache, and a download that fails (as offline)."""
    monkeypatch.delenv(inception.ENV_VAR, raising=False)
    monkeypatch.setattr(inception, "cleanfid_weights_path", lambda: tmp_path / "cleanfid" / inception.FILE_NAME)
    monkeypatch.setattr(inception, "download_weights", lambda dest, timeout_s=60.0: None)


@pytest.fixture(scope="module")
def standin_file(tmp_path_factory) -> pathlib.Path:
    return save_standin(tmp_path_factory.mktemp("weights") / "standin.pt")


@pytest.fixture
def weights(monkeypatch, standin_file) -> pathlib.Path:
    monkeypatch.setenv(inception.ENV_VAR, str(standin_file))
    return standin_file


def smooth_images(n: int, seed: int, size: int = 32) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    low = F.interpolate(torch.rand(n, 3, 4, 4, generator=g), size=size, mode="bilinear", align_corners=False)
    return (low * 200 + torch.rand(n, 3, size, size, generator=g) * 55).to(torch.uint8)


def noisy(images: torch.Tensor, sigma: float, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (images.float() + sigma * torch.randn(images.shape, generator=g)).clamp(0, 255).to(torch.uint8)


def make_ctx(tmp_path: pathlib.Path, samples: torch.Tensor, reference: torch.Tensor, **fid) -> EvalContext:
    return EvalContext(
        network=torch.nn.Identity(),
        image_shape=tuple(reference.shape[1:]),
        device=torch.device("cpu"),
        dtype=torch.float32,
        samples=lambda: samples,
        reference=reference,
        dataset_fingerprint="toy-32-v1",
        fid=FidOptions(batch_size=16, **fid),
        seed=0,
        cache_dir=tmp_path / "cache",
    )


def test_fid_of_a_set_with_itself_is_zero_and_grows_with_noise(weights):
    images = smooth_images(48, 0)
    values = [compute_fid(noisy(images, s) if s else images, images, batch_size=16) for s in (0, 8, 24, 64)]
    assert abs(values[0]) < 1e-6
    assert values[1] < values[2] < values[3]
    assert values[1] > 1e-4


def test_features_equal_cleanfid_get_model_features(weights):
    """Parallel, batched, matrix-product resize + extractor == clean-fid's image-by-image path (PIL), up to
    float rounding; the resized pixels themselves agree to < 1e-3 on the 0-255 scale."""
    images = smooth_images(24, 3)  # clean-fid's generator path needs whole batches
    extractor = inception.load_extractor(FidOptions(), torch.device("cpu"))
    batches = iter(images.split(8))
    ours = extract_features(images, extractor, batch_size=8)
    theirs = cleanfid_fid.get_model_features(
        lambda z: next(batches),
        extractor.model,
        mode="clean",
        num_gen=24,
        batch_size=8,
        device=torch.device("cpu"),
        verbose=False,
    )
    np.testing.assert_allclose(ours, theirs, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("shape", [(32, 32), (16, 40), (299, 299), (64, 48)])
def test_matrix_resize_equals_cleanfid_resize(shape):
    from cleanfid.resize import build_resizer

    from harness.metrics.features import clean_resize

    rng = np.random.default_rng(0)
    hwc = rng.integers(0, 256, (*shape, 3)).astype(np.uint8)
    ours = clean_resize(hwc.transpose(2, 0, 1)).numpy().transpose(1, 2, 0)
    theirs = build_resizer("clean")(hwc)
    assert ours.shape == theirs.shape == (299, 299, 3)
    assert np.abs(ours - theirs).max() < 1e-3


def test_inception_v3_standin_loads_like_the_real_file(tmp_path, monkeypatch):
    """bench/fid.py --extractor inception_v3: the real architecture passes load_extractor's probe in both
    modes and gives finite 2048-d features."""
    path = save_standin(tmp_path / "inception_v3.pt", arch="inception_v3")
    monkeypatch.setenv(inception.ENV_VAR, str(path))
    for mode in ("clean", "legacy_tensorflow"):
        extractor = inception.load_extractor(FidOptions(mode=mode), torch.device("cpu"))
        feats = extract_features(smooth_images(2, 0), extractor, batch_size=2)
        assert feats.shape == (2, 2048) and np.isfinite(feats).all() and feats.std() > 0
    with pytest.raises(ValueError, match="unknown stand-in arch"):
        save_standin(tmp_path / "x.pt", arch="resnet")


def test_normalised_batch_is_cleanfid_normalisation_in_either_layout():
    """(x - 128) / 128 of the clipped resize, bit for bit; channels-last (the CPU default) or not."""
    from harness.metrics.features import CleanResizer, clean_resize

    images = smooth_images(5, 4)
    expected = torch.stack([(clean_resize(img.numpy()) - 128) / 128 for img in images])
    cpu_default = CleanResizer(torch.device("cpu")).normalised(images)
    assert cpu_default.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(cpu_default, expected)
    assert torch.equal(CleanResizer(torch.device("cpu"), channels_last=False).normalised(images), expected)


def test_wrapper_is_cleanfid_inceptionv3w(weights):
    from cleanfid.downloads_helper import inception_url  # imports requests; the harness keeps its own copy

    extractor = inception.load_extractor(FidOptions(), torch.device("cpu"))
    assert isinstance(extractor.model, InceptionV3W)
    assert inception.inception_url == inception_url
    assert extractor.info["name"] == "StandInInception" and len(extractor.info["sha256"]) == 64


@pytest.mark.parametrize("n1, n2", [(40, 60), (300, 200)])
def test_frechet_distance_equals_cleanfid(n1, n2):
    """Both routes (low-rank via features, and via a covariance square root) against scipy's sqrtm."""
    rng = np.random.default_rng(0)
    w = rng.standard_normal((128, 128)).astype(np.float32) / 10
    a = np.maximum(rng.standard_normal((n1, 128)).astype(np.float32) @ w, 0)
    b = np.maximum((rng.standard_normal((n2, 128)) * 1.2 + 0.1).astype(np.float32) @ w, 0)
    sa, sb = Statistics.of(a), Statistics.of(b)
    expected = cleanfid_fid.frechet_distance(sa.mu, sa.sigma, sb.mu, sb.sigma)
    assert sa.distance(sb) == pytest.approx(expected, abs=1e-6 * max(1.0, expected))
    # without features: Cholesky factor (full rank) or the square root (singular, n < d)
    assert frechet_distance(sa.mu, sa.sigma, sb.mu, sb.sigma) == pytest.approx(expected, rel=1e-6, abs=1e-5)


def test_dead_features_drop_out_exactly_and_keep_the_cholesky_route(monkeypatch):
    """Zero-variance feature columns (dead ReLUs) in the second set: same value as scipy's sqrtm, without
    the eigendecomposition fallback for a singular covariance."""
    rng = np.random.default_rng(2)
    a = np.maximum(rng.standard_normal((300, 64)), 0).astype(np.float32)
    b = np.maximum(rng.standard_normal((300, 64)) * 1.1 + 0.2, 0).astype(np.float32)
    b[:, [3, 17, 40]] = 0.0  # dead in the reference set
    a[:, 17] = 0.0  # and one of them in both
    sa, sb = Statistics.of(a), Statistics.of(b)
    expected = cleanfid_fid.frechet_distance(sa.mu, sa.sigma, sb.mu, sb.sigma)
    monkeypatch.setattr(fid_module, "_sqrt_psd", lambda s: pytest.fail("fell back to the eigendecomposition"))
    assert sa.distance(sb) == pytest.approx(expected, rel=1e-6, abs=1e-6)
    assert frechet_distance(sa.mu, sa.sigma, sb.mu, sb.sigma) == pytest.approx(expected, rel=1e-6, abs=1e-6)


def test_frechet_distance_on_standin_features_equals_cleanfid(weights):
    extractor = inception.load_extractor(FidOptions(), torch.device("cpu"))
    fa = extract_features(smooth_images(40, 0), extractor)[:, :256]  # 256-d: scipy's sqrtm stays fast
    fb = extract_features(noisy(smooth_images(40, 1), 20), extractor)[:, :256]
    sa, sb = Statistics.of(fa), Statistics.of(fb)
    expected = cleanfid_fid.frechet_distance(sa.mu, sa.sigma, sb.mu, sb.sigma)
    assert sa.distance(sb) == pytest.approx(expected, rel=1e-5, abs=1e-7)


def test_kid_equals_cleanfid_when_subsets_are_whole_sets():
    rng = np.random.default_rng(1)
    a, b = rng.random((30, 64)).astype(np.float32), (rng.random((30, 64)) * 1.1).astype(np.float32)
    mean, std = kernel_distance(a, b, num_subsets=3, max_subset_size=1000, seed=5)
    assert mean == pytest.approx(cleanfid_fid.kernel_distance(a, b, num_subsets=3), rel=1e-4)  # fp32 sums
    assert std == pytest.approx(0.0, abs=1e-6)  # every subset is the whole (permuted) set


def test_fid_metric_records_comparability_and_hits_the_reference_cache(weights, tmp_path, monkeypatch):
    reference, samples = smooth_images(40, 0), noisy(smooth_images(32, 1), 10)
    calls: list[int] = []
    real = fid_module.extract_features
    monkeypatch.setattr(
        fid_module, "extract_features", lambda src, *a, **k: calls.append(len(src)) or real(src, *a, **k)
    )
    fid_spec = validate_spec("metric", METRICS, "fid")
    (first,) = fid_spec.compute(make_ctx(tmp_path, samples, reference))
    assert calls == [40, 32] and first.attrs["reference_cache"] == "miss"
    (second,) = fid_spec.compute(make_ctx(tmp_path, samples, reference))  # fresh context, same data
    assert calls == [40, 32, 32] and second.attrs["reference_cache"] == "hit"
    assert second.value == pytest.approx(first.value, rel=1e-9) and first.value > 0
    attrs = first.attrs
    assert (attrs["n_generated"], attrs["n_reference"], attrs["mode"]) == (32, 40, "clean")
    assert attrs["reference_fingerprint"] == "toy-32-v1"
    assert (
        attrs["extractor"]["name"] == "StandInInception"
        and attrs["extractor"]["source"] == "$HARNESS_INCEPTION_WEIGHTS"
    )
    (third,) = fid_spec.compute(make_ctx(tmp_path, samples, reference, num_reference=20))  # other key
    assert calls[-2:] == [20, 32] and third.attrs["n_reference"] == 20


def test_kid_metric_and_fid_share_generated_features(weights, tmp_path):
    ctx = make_ctx(tmp_path, noisy(smooth_images(24, 1), 30), smooth_images(24, 0))
    (fid,) = METRICS["fid"]().compute(ctx)
    kid, kid_std = METRICS["kid"](num_subsets=10).compute(ctx)
    assert (kid.name, kid_std.name) == ("kid", "kid_std")
    assert kid.value > 0 and kid_std.value >= 0 and kid.attrs["subset_size"] == 24
    assert kid.attrs["n_reference"] == 24 and fid.value > 0
    assert sum(1 for key in ctx.memo if key[0] == "fid_generated") == 1


def test_legacy_tensorflow_mode_runs_through_the_network_resize(weights, tmp_path):
    images = smooth_images(24, 0)
    assert abs(compute_fid(images, images, mode="legacy_tensorflow")) < 1e-6
    (value,) = METRICS["fid"]().compute(make_ctx(tmp_path, noisy(images, 30), images, mode="legacy_tensorflow"))
    assert value.value > 0 and value.attrs["mode"] == "legacy_tensorflow"


def test_compute_fid_on_folders_equals_tensors(weights, tmp_path):
    a, b = smooth_images(20, 0), noisy(smooth_images(20, 1), 20)
    for name, images in (("a", a), ("b", b)):
        (tmp_path / name).mkdir()
        for i, img in enumerate(images):
            Image.fromarray(img.permute(1, 2, 0).numpy()).save(tmp_path / name / f"{i:03d}.png")
    from_tensors = compute_fid(a, b)
    assert compute_fid(tmp_path / "a", tmp_path / "b") == pytest.approx(from_tensors, rel=1e-6)
    assert compute_fid(tmp_path / "a", b) == pytest.approx(from_tensors, rel=1e-6)


def test_folder_of_mixed_sizes_equals_cleanfid_get_folder_features(weights, tmp_path):
    """Batches that mix sizes (and grayscale files, and .npy) resize image by image into one batch and give
    clean-fid's folder features; a legacy_tensorflow batch of mixed sizes is a one-line MetricError."""
    rng = np.random.default_rng(0)
    sizes = [(32, 32), (32, 32), (40, 24), (32, 32), (17, 50), (32, 32), (32, 32)]
    for i, (h, w) in enumerate(sizes):
        hwc = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        if i == 3:
            Image.fromarray(hwc[:, :, 0]).save(tmp_path / f"{i:02d}.png")  # grayscale PNG
        elif i == 5:
            np.save(tmp_path / f"{i:02d}.npy", hwc)
        else:
            Image.fromarray(hwc).save(tmp_path / f"{i:02d}.png")
    extractor = inception.load_extractor(FidOptions(), torch.device("cpu"))
    ours = extract_features(tmp_path, extractor, batch_size=3)
    theirs = cleanfid_fid.get_folder_features(
        str(tmp_path), extractor.model, num_workers=0, batch_size=3, device=torch.device("cpu"), verbose=False
    )
    assert ours.shape == (len(sizes), 2048)
    np.testing.assert_allclose(ours, theirs, rtol=1e-4, atol=1e-5)
    legacy = inception.load_extractor(FidOptions(mode="legacy_tensorflow"), torch.device("cpu"))
    with pytest.raises(MetricError, match="legacy_tensorflow mode needs images of one size"):
        extract_features(tmp_path, legacy, batch_size=3)


def test_grayscale_images_are_repeated_to_rgb(weights):
    gray = smooth_images(16, 0)[:, :1]
    assert compute_fid(gray, gray.repeat(1, 3, 1, 1)) == pytest.approx(0.0, abs=1e-6)


@pytest.mark.parametrize("damage", ["truncated", "garbage"])
def test_corrupt_weights_give_one_line_error_with_the_fix(standin_file, tmp_path, monkeypatch, damage):
    bad = tmp_path / "bad.pt"
    data = standin_file.read_bytes()
    bad.write_bytes(data[: len(data) // 2] if damage == "truncated" else b"<html>not found</html>")
    monkeypatch.setenv(inception.ENV_VAR, str(bad))
    with pytest.raises(MetricError) as err:
        inception.load_extractor(FidOptions(), torch.device("cpu"))
    message = str(err.value)
    assert "\n" not in message and "corrupt or incomplete" in message and "download it again" in message
    with pytest.raises(MetricError, match="corrupt"):
        preflight(["fid"], FidOptions(), ["fid"])
    (value,) = METRICS["fid"]().compute(make_ctx(tmp_path, smooth_images(4, 0), smooth_images(4, 1)))
    assert value.value is None and "corrupt" in value.attrs["reason"]


def test_missing_configured_file_is_an_error_not_a_fallback(tmp_path):
    with pytest.raises(MetricError, match="do not exist"):
        inception.locate_weights(FidOptions(weights=str(tmp_path / "nope.pt")))


def test_preflight_refuses_fid_objective_without_weights_and_accepts_with_them(standin_file):
    with pytest.raises(MetricError) as err:
        preflight(["fid", "swd"], FidOptions(), ["fid"])
    message = str(err.value)
    assert "\n" not in message and inception.ENV_VAR in message and "eval.fid.weights" in message
    assert inception.FILE_NAME in message
    preflight(["fid"], FidOptions(weights=str(standin_file)), ["fid"])  # the study-file key
    preflight(["swd"], FidOptions(), ["swd"])  # no FID objective: fine
    with pytest.warns(UserWarning, match="unavailable"):
        preflight(["fid", "swd"], FidOptions(), ["swd"])  # recorded only: warn


def test_no_weights_records_none_with_the_reason(tmp_path):
    ctx = make_ctx(tmp_path, smooth_images(8, 0), smooth_images(8, 1))
    (fid,) = METRICS["fid"]().compute(ctx)
    kid, kid_std = METRICS["kid"]().compute(ctx)
    for value in (fid, kid, kid_std):
        assert value.value is None
        assert inception.ENV_VAR in value.attrs["reason"] and "offline" in value.attrs["reason"]
    assert fid.attrs["reference_fingerprint"] == "toy-32-v1"


def test_fid_options_forbid_unknown_keys():
    with pytest.raises(ValueError):
        FidOptions(mode="clean", wieghts="x.pt")
    with pytest.raises(ValueError):
        FidOptions(mode="legacy_pytorch")
