"""harness.rows: the training split as a view (no copy), its batches and its mean image."""

from __future__ import annotations

import numpy as np
import torch

from harness.metrics.calibration import baseline_images
from harness.rows import ImageRows, mean_image, place


def test_a_batch_of_the_view_is_the_rows_it_names(tmp_path):
    data = np.random.default_rng(0).integers(0, 256, (37, 3, 4, 4), dtype=np.uint8)
    path = tmp_path / "images.npy"
    np.save(path, data)
    mapped = torch.from_numpy(np.load(path, mmap_mode="c"))  # copy-on-write map, as `array` opens it
    rows = [5, 0, 36, 17, 2, 9]
    view = ImageRows(mapped, rows, torch.device("cpu"))
    assert len(view) == 6 and view.shape == (6, 3, 4, 4)
    idx = torch.tensor([3, 3, 0, 5])
    assert torch.equal(view[idx], torch.from_numpy(data[[17, 17, 5, 9]]))


def test_the_mean_image_summed_in_chunks_is_the_mean():
    images = torch.randint(0, 256, (23, 3, 5, 5), dtype=torch.uint8)
    expected = images.double().mean(0)
    for chunk in (1, 4, 23, 100):
        assert torch.allclose(mean_image(images, chunk=chunk), expected, rtol=0, atol=1e-12)
    view = ImageRows(images, list(range(0, 23, 2)), torch.device("cpu"))
    assert torch.allclose(mean_image(view, chunk=5), images[::2].double().mean(0), rtol=0, atol=1e-12)


def test_calibration_baselines_from_the_view_equal_those_from_a_copy():
    images = torch.randint(0, 256, (40, 3, 6, 6), dtype=torch.uint8)
    rows = torch.randperm(40)[:30]
    for kind in ("data", "mean_image", "noise"):
        from_view = baseline_images(kind, ImageRows(images, rows, torch.device("cpu")), 8, seed=3)
        from_copy = baseline_images(kind, images[rows], 8, seed=3)
        assert torch.equal(from_view, from_copy), kind


def test_place_keeps_host_images_for_the_cpu():
    images = torch.zeros(2, 3, 4, 4, dtype=torch.uint8)
    assert place(images, torch.device("cpu")) is images
