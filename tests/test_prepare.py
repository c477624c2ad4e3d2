"""``python -m harness.prepare`` and the ``array`` dataset: a prepared, memory-mapped set equals what the
``folder`` dataset decodes, chunk by chunk, with the fingerprint computed once while preparing."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import components
from components.datasets import DatasetError, ImageDataset
from harness.cli import prepare
from harness.cli.prepare import main


def image_folder(root: Path, n_per_class: int = 4) -> Path:
    g = np.random.default_rng(0)
    for c, cls in enumerate(["cat", "dog"]):
        (root / cls).mkdir(parents=True)
        for i in range(n_per_class):
            w, h = 20 + 3 * i, 18 + 2 * c
            Image.fromarray(g.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(root / cls / f"{i}.png")
    return root


def test_prepared_folder_equals_the_folder_dataset(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(prepare, "CHUNK", 3)  # several chunks for 8 images
    src = image_folder(tmp_path / "src")
    out = tmp_path / "prepared"
    assert main([str(src), str(out), "--resolution", "16", "--labels"]) == 0
    assert "name: array" in capsys.readouterr().out
    folder = components.build("dataset", {"name": "folder", "path": str(src), "resolution": 16, "labels": True})
    array = components.build("dataset", {"name": "array", "path": str(out), "resolution": 16, "labels": True})
    assert torch.equal(array.images, folder.images) and torch.equal(array.labels, folder.labels)
    assert array.class_names == folder.class_names == ["cat", "dog"]
    # the stored fingerprint is the one ImageDataset computes, labelled and unlabelled
    assert array.fingerprint == ImageDataset(folder.images.clone(), folder.labels).fingerprint == folder.fingerprint
    plain = components.build("dataset", {"name": "array", "path": str(out), "resolution": 16})
    assert plain.labels is None and plain.fingerprint == ImageDataset(folder.images.clone()).fingerprint
    subset = components.build("dataset", {"name": "array", "path": str(out), "resolution": 16, "max_images": 5})
    assert len(subset) == 5 and all(any(torch.equal(s, a) for a in array.images) for s in subset.images)
    meta = json.loads((out / "meta.json").read_text())
    assert meta["num_images"] == 8 and meta["resolution"] == 16
    archive = shutil.make_archive(str(tmp_path / "src_zip"), "zip", tmp_path, "src")  # images below src/
    assert main([archive, str(tmp_path / "from_zip"), "--resolution", "16", "--labels"]) == 0
    spec = {"name": "array", "path": str(tmp_path / "from_zip"), "resolution": 16, "labels": True}
    zipped = components.build("dataset", spec)
    assert zipped.fingerprint == array.fingerprint and torch.equal(zipped.images, array.images)


def test_downsampled_imagenet_batches(tmp_path):
    """Chrabaszcz et al. 2017's npz batches: planar RGB rows, 1-based labels, read in file-name order."""
    g = np.random.default_rng(1)
    src = tmp_path / "npz"
    src.mkdir()
    batches = [g.integers(0, 256, (n, 3 * 8 * 8), dtype=np.uint8) for n in (5, 3)]
    labels = [g.integers(1, 11, n) for n in (5, 3)]
    for i, (data, lab) in enumerate(zip(batches, labels, strict=True)):
        np.savez(src / f"train_data_batch_{i + 1}.npz", data=data, labels=lab, mean=np.zeros(1))
    out = tmp_path / "prepared"
    assert main([str(src), str(out), "--resolution", "8", "--labels", "--max-images", "7"]) == 0
    data = components.build("dataset", {"name": "array", "path": str(out), "resolution": 8, "labels": True})
    want = np.concatenate(batches)[:7].reshape(7, 3, 8, 8)
    assert np.array_equal(data.images.numpy(), want)
    assert data.labels.tolist() == (np.concatenate(labels)[:7] - 1).tolist()


def test_bad_inputs_exit_2_and_write_nothing(tmp_path, capsys):
    src = image_folder(tmp_path / "src")
    out = tmp_path / "out"
    out.mkdir()
    cases = [
        ([str(src), str(out), "--resolution", "16"], "already exists"),
        ([str(tmp_path / "missing"), str(tmp_path / "o1"), "--resolution", "16"], "no such file"),
        ([str(src / "cat" / "0.png"), str(tmp_path / "o2"), "--resolution", "16"], "neither"),
        ([str(src), str(tmp_path / "o3"), "--resolution", "64"], "smaller than resolution"),
        ([str(src / "cat"), str(tmp_path / "o4"), "--resolution", "16", "--labels"], "class subfolder"),
    ]
    for argv, needle in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("error:") and needle in err[0], err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "src"]  # no partial output left behind


def test_array_dataset_errors(tmp_path):
    src = image_folder(tmp_path / "src")
    assert main([str(src), str(tmp_path / "p"), "--resolution", "16"]) == 0
    with pytest.raises(DatasetError, match="prepare it again with --resolution 32"):
        components.build("dataset", {"name": "array", "path": str(tmp_path / "p"), "resolution": 32})
    with pytest.raises(DatasetError, match="prepared without labels"):
        components.build("dataset", {"name": "array", "path": str(tmp_path / "p"), "resolution": 16, "labels": True})
    with pytest.raises(DatasetError, match="not a prepared dataset"):
        components.build("dataset", {"name": "array", "path": str(src), "resolution": 16})


def test_array_probe_reads_only_the_header(tmp_path):
    """The harness's up-front check (``probe``) sees a prepared set's size and format errors without loading it."""
    from harness.config.preflight import read_limits

    src = image_folder(tmp_path / "src")
    assert main([str(src), str(tmp_path / "p"), "--resolution", "16"]) == 0
    spec = components.validate("dataset", {"name": "array", "path": str(tmp_path / "p"), "resolution": 16})
    assert spec.probe(read_limits()) == 8
    wrong = components.validate("dataset", {"name": "array", "path": str(tmp_path / "p"), "resolution": 32})
    with pytest.raises(DatasetError, match="prepared at 16 px"):
        wrong.probe(read_limits())


def test_a_memory_mapped_dataset_is_not_held_against_the_memory_limit(tmp_path, monkeypatch):
    """``HARNESS_MAX_DATASET_BYTES`` bounds what is decoded into memory: a prepared array is memory-mapped (only a
    ``max_images`` subset is copied), a folder is decoded whole."""
    from harness.config.preflight import check_dataset
    from harness.errors import UsageError

    src = image_folder(tmp_path / "src")  # 8 images: 8 x 3 x 16 x 16 = 6144 bytes at 16 px
    assert main([str(src), str(tmp_path / "p"), "--resolution", "16"]) == 0
    monkeypatch.setenv("HARNESS_MAX_DATASET_BYTES", "5000")
    mapped = components.validate("dataset", {"name": "array", "path": str(tmp_path / "p"), "resolution": 16})
    assert check_dataset(mapped, "s.yaml") == 8
    subset = components.validate(
        "dataset", {"name": "array", "path": str(tmp_path / "p"), "resolution": 16, "max_images": 7}
    )
    with pytest.raises(UsageError, match="HARNESS_MAX_DATASET_BYTES"):
        check_dataset(subset, "s.yaml")  # 7 x 768 = 5376 bytes copied
    decoded = components.validate("dataset", {"name": "folder", "path": str(src), "resolution": 16})
    with pytest.raises(UsageError, match="HARNESS_MAX_DATASET_BYTES"):
        check_dataset(decoded, "s.yaml")
