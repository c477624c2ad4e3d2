"""``torchrun --nproc-per-node 2 -m harness.study`` on CPU (gloo): each trial trained by two processes with DDP.

What must hold: every grid cell is one complete trial, written once (rank 0 alone talks to the database); the
trial records its world size and per-device batch; the training equals a single process's with the same
global batch and seed, loss point for loss point, to within float rounding: both draw the same examples,
times and noise, but the mean gradient is summed in another order (per rank, then the all-reduce), so the
weights differ in the last bits after the first step (measured: 1e-7 relative over 8 steps; the test allows
1e-5). A job killed while rank 0 writes a checkpoint resumes from the previous one on the rerun (rank 0 wrote
it with every rank's random state, every rank loads it).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
import torch

import components
from harness.store import Store
from harness.study import main

ROOT = Path(__file__).resolve().parent.parent

STUDY = """
name: ddp
seed: 0
dataset: {{name: shapes, resolution: 16, num_images: 48}}
model: {{name: uvit, preset: tiny, stem: {{name: wavelet, levels: 1}}}}
diffusion: {{schedule: {{name: cosine}}, loss: mse}}
train: {{steps: 8, batch_size: {batch}, warmup_steps: 2, log_every: 2, checkpoint_every: 2, device: cpu}}
eval: {{num_samples: 8, batch_size: 8, grid_size: 4, sampler: {{name: ddim, steps: 2}}, metrics: [flops, throughput,
       memory, mfu]}}
search: {{sampler: grid, space: {{train.seed: [0, 1]}}}}
objectives: [{{metric: val_loss, direction: minimize}}]
"""
RTOL = 1e-5  # float summation order (see the module docstring)


def write_study(folder: Path, batch: int = 8) -> Path:
    path = folder / "ddp.yaml"
    path.write_text(STUDY.format(batch=batch))
    return path


def torchrun(study: Path, url: str, cache: Path, fault: str | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HARNESS_CACHE_DIR": str(cache), "OMP_NUM_THREADS": "1"}
    env.pop("HARNESS_FAULT", None)
    if fault:
        env["HARNESS_FAULT"] = fault
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
    cmd += ["-m", "harness.study", str(study), "--storage", url, "--quiet"]
    return subprocess.run(cmd, cwd=study.parent, env=env, capture_output=True, text=True, timeout=600)


def values(store: Store, name: str) -> dict[tuple[int, str, int | None], float]:
    metrics = store.metrics("ddp")
    rows = metrics[metrics["name"] == name]
    trials = store.trials("ddp").set_index("trial_number")
    seed_of = {n: json.loads(p)["train.seed"] for n, p in trials["params_json"].items()}
    out = {}
    for number, step, value in zip(rows["trial_number"], rows["step"], rows["value"], strict=True):
        out[(seed_of[number], None if step != step else int(step))] = value
    return out


def test_two_ranks_train_like_one_process_write_each_cell_once_and_resume(tmp_path: Path, monkeypatch):
    cache = tmp_path / "cache"
    study = write_study(tmp_path)
    # the reference: one process, the same global batch (8) and seed
    ref_url = f"sqlite:///{tmp_path / 'one.db'}"
    monkeypatch.setenv("HARNESS_CACHE_DIR", str(cache))
    monkeypatch.chdir(tmp_path)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert main([str(study), "--storage", ref_url, "--quiet"]) == 0
    finally:
        torch.set_num_threads(threads)
    url = f"sqlite:///{tmp_path / 'ddp.db'}"
    # rank 0 dies writing the step-4 checkpoint of the first trial; torchrun ends rank 1
    killed = torchrun(study, url, cache, fault="checkpoint_write:step=4")
    assert killed.returncode != 0 and "fault: checkpoint_write" in killed.stderr, killed.stderr[-3000:]
    done = torchrun(study, url, cache)
    assert done.returncode == 0, done.stdout + done.stderr[-3000:]
    assert "2 of 2 planned trials complete in the database" in done.stdout
    # one complete trial per cell, written once, in Optuna and in the harness tables
    store = Store(url)
    trials = optuna.load_study(study_name="ddp", storage=url).trials
    complete = sorted(t.params["train.seed"] for t in trials if t.state.name == "COMPLETE")
    assert complete == [0, 1] and not [t for t in trials if t.state.name == "RUNNING"]
    rows = store.trials("ddp")
    assert sorted(rows[rows["state"] == "complete"]["trial_number"]) == sorted(store.claims("ddp")["trial_number"])
    assert list(rows[rows["state"] != "complete"]["error"]) == ["interrupted: the process running it ended"]
    metrics = store.metrics("ddp")
    assert not metrics[["trial_number", "name", "step"]].astype(str).duplicated().any()
    # recorded: two processes, 4 images each; the killed trial resumed from its step-2 checkpoint
    assert set(values(store, "world_size").values()) == {2.0}
    assert set(values(store, "per_device_batch_size").values()) == {4.0}
    assert sorted(values(store, "resumed_from_step").values()) == [0.0, 2.0]
    mfu = metrics[metrics["name"] == "mfu"]["attrs_json"].map(json.loads)
    assert all(a["world_size"] == 2 and len(a["by_rank"]) == 2 for a in mfu)
    # the same training as one process: every loss point and the held-out loss, to float rounding
    reference, ours = Store(ref_url), store
    for name in ("train_loss", "val_loss"):
        expected, got = values(reference, name), values(ours, name)
        assert got.keys() == expected.keys() and len(got) == (8 if name == "train_loss" else 2)
        for key, value in expected.items():
            assert got[key] == pytest.approx(value, rel=RTOL), (name, key)
    assert set(values(reference, "world_size").values()) == {1.0}


def test_a_batch_that_does_not_divide_over_the_ranks_is_refused_before_anything_is_written(
    tmp_path: Path, monkeypatch, capsys
):
    """Checked from torchrun's environment before the process joins the job or opens the database."""
    study = write_study(tmp_path, batch=8)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("WORLD_SIZE", "3")
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("LOCAL_RANK", "0")
    url = f"sqlite:///{tmp_path / 'never.db'}"
    assert main([str(study), "--storage", url]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (
        f"error: {study}: train.batch_size: 8 does not divide over the 3 processes of this torchrun job "
        "(per-device batch 2.66667); use a multiple of 3"
    )
    assert main([str(study), "--storage", url, "--set", "search.space.train.batch_size=[6, 10]"]) == 2
    assert "search.space.train.batch_size: 10 does not divide" in capsys.readouterr().err
    assert main([str(study), "--storage", url, "--workers", "2", "--set", "train.batch_size=9"]) == 2
    assert "--workers: not under torchrun" in capsys.readouterr().err
    assert not (tmp_path / "never.db").exists()


@pytest.mark.parametrize("network", ["unet", "uvit"])
def test_every_parameter_gets_a_gradient_as_ddp_without_unused_parameter_search_needs(network: str):
    """DDP (``Parallel.wrap``) all-reduces every parameter's gradient each step and fails on one that got none:
    every network x stem, with and without labels, uses all of its parameters."""
    for stem in ["none", {"name": "wavelet", "levels": 1}, {"name": "patch", "patch_size": 2}]:
        for classes in (0, 10):
            spec = {"name": network, "preset": "tiny", "resolution": 16, "stem": stem, "num_classes": classes}
            model = components.build("network", spec)
            labels = torch.tensor([1, classes]) if classes else None
            model(torch.randn(2, 3, 16, 16), torch.randn(2), labels).pow(2).mean().backward()
            assert [n for n, p in model.named_parameters() if p.grad is None] == [], (stem, classes)
