"""Limits and up-front checks: a paper-size run fits under every default limit, each limit can be moved by
its environment variable and is named when hit, YAML aliases are measured without being expanded, and a
folder dataset is checked by decoding one image, not the set."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml
from hostile_fixtures import BASE_STUDY, image_folder, image_zip

import components
from components.datasets import Folder, ReadLimits
from components.datasets import folder as folder_module
from components.networks import NETWORKS
from components.stems import STEMS
from harness import limits
from harness.config import load_study, resolve
from harness.config.models import RangeSpec
from harness.config.preflight import check_trials, count_params, read_limits
from harness.config.space import Dimension, get_path
from harness.config.yamlio import TooLarge, expanded_size, loads
from harness.errors import UsageError

PAPER = {  # simple diffusion's largest runs (Sec. 5): U-ViT of ~2B parameters, batch 2048, 500k steps, FID-50k
    "name": "paper",
    "dataset": {"name": "shapes", "resolution": 128, "num_images": 1_281_167},  # ImageNet-1k's size
    "model": {"name": "uvit", "preset": "large", "stem": {"name": "wavelet", "levels": 1}},
    "train": {"steps": 500_000, "batch_size": 2048, "warmup_steps": 10_000, "checkpoint_every": 5000},
    "eval": {"num_samples": 50_000, "batch_size": 1024, "sampler": {"name": "ddim", "steps": 512}},
}


def test_a_paper_size_run_fits_under_the_default_limits(monkeypatch):
    for name in limits.LIMITS:
        monkeypatch.delenv(limits.env_var(name), raising=False)
    config = resolve(copy.deepcopy(PAPER))
    check_trials(Path("paper.yaml"), [config])  # dataset bytes (63 GB) and parameters within the limits
    large_512 = {**config.to_json()["model"], "resolution": 512, "stem": {"name": "wavelet", "levels": 2}}
    params = count_params(resolve({**PAPER, "model": large_512}).model)
    assert 1e9 < params < limits.limit("params")


def test_limits_move_with_their_environment_variable_and_are_named(monkeypatch):
    config = copy.deepcopy(PAPER)
    monkeypatch.setenv("HARNESS_MAX_STEPS", "100_000")
    with pytest.raises(UsageError, match=r"^train.steps: 500000 is above the limit 100000 \(HARNESS_MAX_STEPS\)$"):
        resolve(config)
    monkeypatch.setenv("HARNESS_MAX_STEPS", "1000000")
    assert resolve(config).train.steps == 500_000
    monkeypatch.setenv("HARNESS_MAX_STEPS", "-3")
    with pytest.raises(UsageError, match=r"\$HARNESS_MAX_STEPS: must be a positive integer"):
        limits.limit("steps")


def test_every_bounded_key_exists_in_a_resolved_config():
    shapes = resolve(
        {
            "name": "x",
            "dataset": {"name": "shapes", "num_images": 64},
            "train": {"warmup_steps": 5},  # a number (its default, auto, is a fraction of train.steps)
            "eval": {"fid": {"num_reference": 8}},
        }
    )
    folder = resolve({"name": "x", "dataset": {"name": "folder", "path": "anywhere", "max_images": 8}})
    for key in limits.CONFIG_LIMITS:
        found = []
        for config in (shapes, folder):
            try:
                found.append(get_path(config.to_json(), key))
            except KeyError:
                pass
        assert any(isinstance(v, int) for v in found), key
    assert set(limits.CONFIG_LIMITS.values()) <= set(limits.LIMITS)


def test_aliases_are_counted_expanded_without_being_expanded():
    text = "a: &a [1, 2, 3]\nb: [*a, *a, *a]\nbase: &base {x: 1}\nmerged: {<<: *base, y: 2}\n"
    # the document 1, its four keys 4, a 1+3, b 1+3*4, base 1+2, merged 1 + 4 nodes with *base as 3
    assert expanded_size(yaml.compose(text), 1000) == 1 + 4 + 4 + 13 + 3 + 7
    assert loads(text, max_nodes=1000)["merged"] == {"x": 1, "y": 2}
    bomb = "l0: &l0 [" + ",".join(["x"] * 10) + "]\n"
    bomb += "".join(f"l{i}: &l{i} [" + ",".join([f"*l{i - 1}"] * 10) + "]\n" for i in range(1, 9))
    with pytest.raises(TooLarge):
        loads(bomb, max_nodes=100_000)


def test_a_huge_grid_is_sized_without_listing_it():
    axis = Dimension("train.seed", RangeSpec(low=0, high=1e12, step=1))
    assert axis.size() == 10**12 + 1
    assert Dimension("x", RangeSpec(low=0, high=1, step=0.25)).grid_values() == [0.0, 0.25, 0.5, 0.75, 1.0]


def test_a_study_file_may_use_anchors_and_merge_keys(tmp_path):
    text = BASE_STUDY.replace("model: {", "model: &net {")
    text += "search: {space: {model: [*net, {<<: *net, depth: 1}]}}\n"
    (tmp_path / "s.yaml").write_text(text)
    (dim,) = load_study(tmp_path / "s.yaml").dims
    assert dim.values == [{"name": "uvit", "preset": "tiny"}, {"name": "uvit", "preset": "tiny", "depth": 1}]


def count_decodes(monkeypatch) -> dict[str, int]:
    calls = {"decode": 0, "header": 0}
    decode, header = folder_module.decode_image, folder_module.open_image

    def counted_decode(*args, **kwargs):
        calls["decode"] += 1
        return decode(*args, **kwargs)

    def counted_header(*args, **kwargs):
        calls["header"] += 1
        return header(*args, **kwargs)

    monkeypatch.setattr(folder_module, "decode_image", counted_decode)
    monkeypatch.setattr(folder_module, "open_image", counted_header)
    return calls


@pytest.mark.parametrize("kind", ["folder", "zip"])
def test_probe_decodes_one_image_and_reads_a_few_headers(kind, tmp_path, monkeypatch):
    path = image_folder(tmp_path / "imgs", 40) if kind == "folder" else image_zip(tmp_path / "imgs.zip", 40)
    calls = count_decodes(monkeypatch)
    spec = Folder(path=str(path), resolution=16)
    assert spec.probe(read_limits()) == 40
    assert calls["decode"] == 1 and calls["header"] <= 1 + 16  # decode_image opens its image too
    assert len(spec.instantiate()) == 40 and calls["decode"] == 1 + 40  # what the first trial decodes
    assert Folder(path=str(path), resolution=16, max_images=5).probe(read_limits()) == 5


def test_links_to_other_folders_are_followed_but_loops_are_refused(tmp_path):
    image_folder(tmp_path / "data" / "a", 2)
    image_folder(tmp_path / "elsewhere", 2)
    (tmp_path / "data" / "b").symlink_to(tmp_path / "elsewhere")
    limits_ = ReadLimits(images=100, file_bytes=1 << 20, zip_ratio=100, image_pixels=10**6)
    assert Folder(path=str(tmp_path / "data"), resolution=16).probe(limits_) == 4
    (tmp_path / "elsewhere" / "back").symlink_to(tmp_path / "data")
    with pytest.raises(ValueError, match="symbolic link loop"):
        Folder(path=str(tmp_path / "data"), resolution=16).probe(limits_)


def test_every_limit_is_documented_in_the_readme():
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    for name in limits.LIMITS:
        assert f"| `{limits.env_var(name)}` |" in readme, name


@pytest.mark.parametrize("network", sorted(NETWORKS))
@pytest.mark.parametrize("stem", sorted(STEMS))
def test_parameters_counted_on_the_meta_device_equal_the_real_count(network, stem):
    spec = resolve(
        {"name": "x", "dataset": {"name": "shapes", "resolution": 32}, "model": {"name": network, "stem": stem}}
    )
    real = sum(p.numel() for p in components.build("network", spec.to_json()["model"]).parameters())
    assert count_params(spec.model) == real > 0
