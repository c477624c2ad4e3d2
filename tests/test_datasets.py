"""Datasets: the procedural ``shapes`` default and the ``folder`` reader (directory and .zip), on CPU."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

import components
from components.datasets import DATASETS, SHAPE_TYPES, DatasetError, Folder, ImageDataset, Shapes
from components.datasets import folder as folder_module
from components.datasets import shapes as shapes_module
from components.registry import ComponentError
from harness.cli.prepare import prepare

REPO = Path(__file__).resolve().parents[1]


def save_image(path: Path, size: tuple[int, int], seed: int, mode: str = "RGB") -> Path:
    """A random-but-smooth test image (smooth so JPEG artefacts stay small), written by PIL."""
    rng = np.random.default_rng(seed)
    w, h = size
    base = rng.integers(0, 256, (h // 4 + 1, w // 4 + 1, len(mode)), dtype=np.uint8)
    img = Image.fromarray(base, mode).resize((w, h), Image.Resampling.BILINEAR)
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path, format="JPEG" if path.suffix.lower() in (".jpg", ".jpeg") else "PNG")
    return path


def reference(path: Path, resolution: int) -> np.ndarray:
    """Centre crop + LANCZOS resize computed directly with PIL: uint8 [3, R, R]."""
    img = Image.open(path).convert("RGB")
    w, h = img.size
    s = min(w, h)
    box = ((w - s) // 2, (h - s) // 2, (w - s) // 2 + s, (h - s) // 2 + s)
    out = img.crop(box).resize((resolution, resolution), Image.Resampling.LANCZOS)
    return np.asarray(out).transpose(2, 0, 1)


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """root/cat/{a.png, b.JPG}, root/dog/{c.PNG, deep/d.jpeg}, plus a non-image file that is ignored."""
    root = tmp_path / "images"
    save_image(root / "cat" / "a.png", (80, 48), 1)
    save_image(root / "cat" / "b.JPG", (40, 60), 2)
    save_image(root / "dog" / "c.PNG", (32, 32), 3)
    save_image(root / "dog" / "deep" / "d.jpeg", (66, 94), 4)
    (root / "dog" / "notes.txt").write_text("not an image")
    return root


def zip_tree(root: Path, dest: Path, prefix: str = "data/") -> Path:
    with zipfile.ZipFile(dest, "w") as zf:
        for f in sorted(root.rglob("*")):
            if f.is_file():
                zf.write(f, prefix + f.relative_to(root).as_posix())
    return dest


# ---------------------------------------------------------------- registry and interface


@pytest.mark.parametrize("name", sorted(DATASETS))
def test_registry_entry_builds(name: str, tree: Path) -> None:
    paths = {"folder": tree, "array": tree.parent / "prepared"}  # the datasets without a default path
    if name == "array":
        prepare(tree, paths["array"], resolution=32, labels=False, limit=None)
    spec = {"name": name, "path": str(paths[name])} if name in paths else name
    ds = components.build("dataset", spec)
    assert isinstance(ds, ImageDataset) and len(ds) > 0
    assert ds.images.dtype == torch.uint8 and ds.channels == 3 and ds.images.shape[1] == 3
    x, label = ds[0]
    assert x.dtype == torch.float32 and x.shape == (3, ds.resolution, ds.resolution) and label == -1
    assert components.validate("dataset", spec).to_spec()["name"] == name


def test_folder_needs_a_path_and_specs_are_strict() -> None:
    with pytest.raises(ComponentError, match="path"):
        components.build("dataset", "folder")
    with pytest.raises(ComponentError, match="resolutoin"):
        components.build("dataset", {"name": "shapes", "resolutoin": 16})
    with pytest.raises(ComponentError, match="resolution"):
        components.build("dataset", {"name": "shapes", "resolution": 4})


# ---------------------------------------------------------------- shapes


@pytest.mark.parametrize("resolution", [16, 32, 64])
def test_shapes_values_dtype_shape(resolution: int) -> None:
    ds = Shapes(resolution=resolution, num_images=24).instantiate()
    assert ds.images.shape == (24, 3, resolution, resolution) and ds.images.dtype == torch.uint8
    assert ds.labels is None and ds.num_classes == 0 and ds.class_names == []
    assert ds.resolution == resolution and len(ds) == 24
    batch = torch.stack([ds[i][0] for i in range(len(ds))])
    assert batch.dtype == torch.float32 and batch.min() >= -1.0 and batch.max() <= 1.0
    assert batch.min() < -0.9 and batch.max() > 0.9  # uses the whole range
    x, label = next(iter(torch.utils.data.DataLoader(ds, batch_size=8)))
    assert x.shape == (8, 3, resolution, resolution) and (label == -1).all()


def test_shapes_deterministic_per_seed() -> None:
    a = Shapes(resolution=16, num_images=70, seed=3).instantiate()
    b = Shapes(resolution=16, num_images=70, seed=3).instantiate()
    c = Shapes(resolution=16, num_images=70, seed=4).instantiate()
    assert torch.equal(a.images, b.images)
    assert not torch.equal(a.images, c.images)
    assert (a.images != c.images).flatten(1).any(1).all()  # every image differs
    assert len({img.numpy().tobytes() for img in a.images}) == len(a)  # no duplicates within a set
    prefix = Shapes(resolution=16, num_images=10, seed=3).instantiate()
    assert torch.equal(prefix.images, a.images[:10])  # a set is a prefix of a larger one


@pytest.mark.parametrize("resolution", [32, 64])
def test_shapes_have_global_structure_and_fine_detail(resolution: int) -> None:
    x = Shapes(resolution=resolution, num_images=64).instantiate().images.float() / 255.0  # [N, 3, R, R]
    low = F.avg_pool2d(x, resolution // 4)  # [N, 3, 4, 4]
    assert low.flatten(2).std(2).mean() > 0.08  # large-scale layout varies
    residual = x - F.interpolate(F.avg_pool2d(x, 2), scale_factor=2, mode="nearest")
    noise_only = shapes_module.NOISE_STD * (3 / 4) ** 0.5  # what the pixel noise alone gives
    assert residual.pow(2).mean().sqrt() > 2 * noise_only  # edges and texture, not only noise
    coarse = (x[:16] * 7.999).floor().numpy().astype(int)  # 8 levels per channel
    colours = [len(np.unique(img.reshape(3, -1).T, axis=0)) for img in coarse]
    assert min(colours) >= 8


def test_shapes_labels_are_the_largest_shape_type() -> None:
    ds = Shapes(resolution=16, num_images=256, labels=True).instantiate()
    assert ds.num_classes == len(SHAPE_TYPES) == 3 and ds.class_names == SHAPE_TYPES
    assert ds.labels.dtype == torch.int64 and ds.labels.shape == (256,)
    assert set(ds.labels.tolist()) == {0, 1, 2}
    assert ds[0][1] == int(ds.labels[0])
    plain = Shapes(resolution=16, num_images=256).instantiate()
    assert torch.equal(ds.images, plain.images)  # labels do not change pixels
    p = shapes_module.draw_scenes(np.random.default_rng([0, 0, 0]), 64)
    factor = np.array([np.pi, 4.0, 3 * np.sqrt(3) / 4 * shapes_module.TRIANGLE_SCALE**2])
    area = factor[p["kind"]] * p["size"] ** 2 * np.where(p["kind"] == 1, p["aspect"], 1.0)
    area = np.where(p["active"], area, -1.0)
    assert (area[:, 0] == area.max(1)).all() and p["active"][:, 0].all()
    assert torch.equal(ds.labels[:64], torch.from_numpy(p["kind"][:, 0]))


def test_shapes_cache_hit_and_no_writes_without_cache_dir(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    Shapes(resolution=8, num_images=5).instantiate()
    assert list(tmp_path.iterdir()) == []  # cache_dir=None writes nothing
    cache = tmp_path / "cache"
    first = Shapes(resolution=16, num_images=20, seed=1, cache_dir=str(cache)).instantiate()
    assert len(list((cache / "datasets").glob("shapes-*.npz"))) == 1

    def boom(*args, **kwargs):
        raise AssertionError("generator called despite a cached copy")

    monkeypatch.setattr(shapes_module, "generate_shapes", boom)
    again = Shapes(resolution=16, num_images=20, seed=1, cache_dir=str(cache)).instantiate()
    assert torch.equal(first.images, again.images) and first.fingerprint == again.fingerprint
    with pytest.raises(AssertionError, match="generator called"):  # other key -> generate
        Shapes(resolution=16, num_images=20, seed=2, cache_dir=str(cache)).instantiate()


def test_shapes_style_leaves_things_out_of_the_same_scenes() -> None:
    """The default style is the full dataset, bit for bit; a simpler style draws the same random numbers and
    leaves shapes, textures, outlines or noise out: each (seed, index) keeps its layout, colours, background."""
    default = Shapes(resolution=16, num_images=70, seed=3).instantiate()
    assert Shapes(resolution=16, num_images=70, seed=3).style == shapes_module.SceneStyle()
    assert torch.equal(default.images, torch.from_numpy(shapes_module.generate_shapes(70, 16, 3)[0]))
    full = shapes_module.draw_scenes(np.random.default_rng([3, 0, 0]), 64)
    style = shapes_module.SceneStyle(max_shapes=1, min_size=0.2, max_size=0.3, textures=False, outlines=False)
    simple = shapes_module.draw_scenes(np.random.default_rng([3, 0, 0]), 64, style)
    assert (simple["active"].sum(1) == 1).all() and (full["active"].sum(1) > 1).any()
    assert not simple["texture"].any() and not simple["outline"].any() and full["texture"].any()
    assert ((simple["size"] >= 0.2) & (simple["size"] <= 0.3)).all()
    np.testing.assert_array_equal(simple["bg0"], full["bg0"])  # the same stream: background kept
    flat = Shapes(resolution=16, num_images=64, seed=3, max_shapes=1, textures=False, outlines=False, noise_std=0)
    x = flat.instantiate().images.numpy().astype(int)
    p = shapes_module.draw_scenes(np.random.default_rng([3, 0, 0]), 64, flat.style)
    for i in range(8):  # one flat shape without noise: inside it every pixel is its colour
        coord = (np.arange(16) + 0.5) / 16
        d = np.hypot(coord[None, :] - p["cx"][i, 0], coord[:, None] - p["cy"][i, 0])
        if p["kind"][i, 0] == 0 and (d < p["size"][i, 0] - 0.1).sum() > 1:
            inside = x[i][:, d < p["size"][i, 0] - 0.1]  # [3, pixels] well inside the circle
            np.testing.assert_array_equal(inside, np.round(p["colour"][i, 0] * 255)[:, None].repeat(inside.shape[1], 1))
    with pytest.raises(ValueError, match="min_size: must not exceed max_size"):
        Shapes(min_size=0.3, max_size=0.2)


def test_generation_is_vectorised_in_chunks(monkeypatch) -> None:
    """What makes generation fast, without reading the clock (the timing is bench/datasets.py's): every image
    of a chunk is rendered by one vectorised call, so 130 images take 3 calls, not 130."""
    calls: list[int] = []
    render = shapes_module.render
    monkeypatch.setattr(shapes_module, "render", lambda p, *args: calls.append(len(p["kind"])) or render(p, *args))
    images, labels = shapes_module.generate_shapes(130, 16, 0)
    assert images.shape == (130, 3, 16, 16) and labels.shape == (130,)
    assert calls == [shapes_module.CHUNK, shapes_module.CHUNK, 130 - 2 * shapes_module.CHUNK]


# ---------------------------------------------------------------- folder


def test_folder_reads_png_and_jpeg_with_centre_crop_and_lanczos(tree: Path) -> None:
    ds = Folder(path=str(tree), resolution=32).instantiate()
    names = ["cat/a.png", "cat/b.JPG", "dog/c.PNG", "dog/deep/d.jpeg"]  # sorted, notes.txt ignored
    assert len(ds) == 4 and ds.images.shape == (4, 3, 32, 32) and ds.labels is None
    for i, name in enumerate(names):
        np.testing.assert_array_equal(ds.images[i].numpy(), reference(tree / name, 32))
    small = Folder(path=str(tree), resolution=9).instantiate()
    for i, name in enumerate(names):
        np.testing.assert_array_equal(small.images[i].numpy(), reference(tree / name, 9))


def test_folder_from_zip_equals_directory(tree: Path, tmp_path: Path) -> None:
    from_dir = Folder(path=str(tree), resolution=12, labels=True).instantiate()
    for prefix in ("", "data/"):  # a common top folder is the root
        archive = zip_tree(tree, tmp_path / f"set{len(prefix)}.zip", prefix)
        from_zip = Folder(path=str(archive), resolution=12, labels=True).instantiate()
        assert torch.equal(from_zip.images, from_dir.images)
        assert torch.equal(from_zip.labels, from_dir.labels) and from_zip.class_names == ["cat", "dog"]
        assert from_zip.fingerprint == from_dir.fingerprint


def test_folder_labels_from_first_level_subfolders(tree: Path) -> None:
    ds = Folder(path=str(tree), resolution=8, labels=True).instantiate()
    assert ds.class_names == ["cat", "dog"] and ds.num_classes == 2
    assert ds.labels.tolist() == [0, 0, 1, 1] and ds.labels.dtype == torch.int64
    assert [ds[i][1] for i in range(4)] == [0, 0, 1, 1]


def test_folder_alpha_over_white_and_max_images(tmp_path: Path) -> None:
    rgba = np.zeros((10, 10, 4), dtype=np.uint8)  # fully transparent black
    Image.fromarray(rgba, "RGBA").save(tmp_path / "clear.png")
    save_image(tmp_path / "x.png", (10, 10), 5)
    save_image(tmp_path / "y.png", (10, 10), 6)
    ds = Folder(path=str(tmp_path), resolution=8).instantiate()
    assert (ds.images[0] == 255).all()
    sub = Folder(path=str(tmp_path), resolution=8, max_images=2).instantiate()
    assert len(sub) == 2 and torch.equal(
        sub.images, Folder(path=str(tmp_path), resolution=8, max_images=2).instantiate().images
    )


def test_folder_cache_hit_and_invalidation(tree: Path, tmp_path: Path, monkeypatch) -> None:
    cache = tmp_path / "cache"
    calls = []
    decode = folder_module.decode_image
    monkeypatch.setattr(folder_module, "decode_image", lambda *a: calls.append(a[1]) or decode(*a))
    first = Folder(path=str(tree), resolution=8, cache_dir=str(cache)).instantiate()
    assert len(calls) == 4 and len(list((cache / "datasets").glob("folder-*.npz"))) == 1
    again = Folder(path=str(tree), resolution=8, cache_dir=str(cache)).instantiate()
    assert len(calls) == 4 and torch.equal(first.images, again.images)  # no re-decoding
    save_image(tree / "cat" / "a.png", (80, 48), 99)  # new content, size and mtime
    os.utime(tree / "cat" / "a.png", ns=(1, 1))
    changed = Folder(path=str(tree), resolution=8, cache_dir=str(cache)).instantiate()
    assert len(calls) == 8 and changed.fingerprint != first.fingerprint


def _corrupt(root: Path) -> None:
    save_image(root / "good.png", (12, 12), 0)
    (root / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nthis is not really a png")


def _truncated(root: Path) -> None:
    data = save_image(root / "photo.jpg", (64, 64), 0).read_bytes()
    (root / "photo.jpg").write_bytes(data[: len(data) // 3])


ERROR_CASES = {
    "missing": (lambda root: None, "missing", {}, "path", "does not exist"),
    "not_dir_or_zip": (lambda root: (root / "x.txt").write_text("hi"), "x.txt", {}, "path", "neither"),
    "fake_zip": (lambda root: (root / "x.zip").write_text("hi"), "x.zip", {}, "path", "neither"),
    "empty": (lambda root: (root / "sub").mkdir(), "", {}, "path", "no images"),
    "corrupt": (_corrupt, "", {}, "path", "broken.png"),
    "truncated": (_truncated, "", {}, "path", "photo.jpg"),
    "too_small": (lambda root: save_image(root / "tiny.png", (31, 40), 0), "", {}, "resolution", "tiny.png"),
    "no_subfolders": (
        lambda root: save_image(root / "a.png", (40, 40), 0),
        "",
        {"labels": True},
        "labels",
        "no subfolders",
    ),
    "loose_image": (
        lambda root: (save_image(root / "c" / "a.png", (40, 40), 0), save_image(root / "b.png", (40, 40), 1)),
        "",
        {"labels": True},
        "labels",
        "b.png",
    ),
}


@pytest.mark.parametrize("case", sorted(ERROR_CASES))
def test_folder_errors_are_one_line_dataset_errors(case: str, tmp_path: Path) -> None:
    make, target, extra, key, fragment = ERROR_CASES[case]
    root = tmp_path / "root"
    root.mkdir()
    make(root)
    with pytest.raises(DatasetError) as info:
        Folder(path=str(root / target), resolution=32, **extra).instantiate()
    err = info.value
    assert isinstance(err, ComponentError) and isinstance(err, ValueError)
    assert err.family == "dataset" and err.key == key, str(err)
    assert fragment in str(err) and "\n" not in str(err)
    if case == "too_small":
        assert "31x40" in str(err)


# ---------------------------------------------------------------- fingerprint and split


def test_fingerprint_tracks_content() -> None:
    a = Shapes(resolution=8, num_images=6).instantiate()
    assert a.fingerprint == Shapes(resolution=8, num_images=6).instantiate().fingerprint
    assert len(a.fingerprint) == 64
    others = [
        Shapes(resolution=8, num_images=6, seed=1),
        Shapes(resolution=8, num_images=5),
        Shapes(resolution=9, num_images=6),
        Shapes(resolution=8, num_images=6, labels=True),
    ]
    assert len({a.fingerprint, *(o.instantiate().fingerprint for o in others)}) == 5
    same = ImageDataset(a.images.clone())
    assert same.fingerprint == a.fingerprint
    changed = a.images.clone()
    changed[0, 0, 0, 0] ^= 1
    assert ImageDataset(changed).fingerprint != a.fingerprint


def test_fingerprint_stable_across_processes() -> None:
    code = "from components.datasets import Shapes;print(Shapes(resolution=8, num_images=6).instantiate().fingerprint)"
    env = {**os.environ, "PYTHONHASHSEED": "123"}
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, check=True
    ).stdout.strip()
    assert out == Shapes(resolution=8, num_images=6).instantiate().fingerprint


def test_split_deterministic_and_disjoint() -> None:
    ds = Shapes(resolution=8, num_images=50).instantiate()
    train, hold = ds.split(0.2, seed=0)
    assert (train, hold) == ds.split(0.2, seed=0)
    assert len(hold) == 10 and len(train) == 40 and not set(train) & set(hold)
    assert sorted(train + hold) == list(range(50)) and train == sorted(train)
    assert ds.split(0.2, seed=1)[1] != hold
    assert ds.split(0.0, seed=0) == (list(range(50)), [])
    for bad in (-0.1, 1.0):
        with pytest.raises(DatasetError) as info:
            ds.split(bad, seed=0)
        assert info.value.key == "holdout_fraction"
