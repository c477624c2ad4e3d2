"""The study runner end to end on tiny studies: database contents, resume, failures, kill and resume."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
import torch

from harness import results
from harness.driver.progress import EXIT_ALL_FAILED
from harness.study import main

ROOT = Path(__file__).resolve().parent.parent

TINY = """
name: {name}
seed: 0
dataset: {{name: shapes, resolution: 16, num_images: 48}}
model: {{name: uvit, preset: tiny, stem: {{name: wavelet, levels: 1}}}}
diffusion: {{schedule: {{name: cosine}}, loss: mse}}
train: {{steps: {steps}, batch_size: 4, warmup_steps: 2, log_every: 2, checkpoint_every: {ckpt}, device: cpu}}
eval: {{num_samples: 8, batch_size: 8, grid_size: 4, sampler: {{name: ddim, steps: 2}},
       metrics: [swd, flops, throughput, memory, mfu, fid]}}
search:
  sampler: grid
  space:
    {space}
objectives: [{{metric: val_loss, direction: minimize}}]
"""


def write_study(tmp_path: Path, name="tiny", steps=4, ckpt=2, space="train.seed: [0, 1]") -> Path:
    path = tmp_path / f"{name}.yaml"
    path.write_text(TINY.format(name=name, steps=steps, ckpt=ckpt, space=space))
    return path


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    monkeypatch.setenv("HARNESS_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("HARNESS_INCEPTION_WEIGHTS", raising=False)
    monkeypatch.chdir(tmp_path)


def test_tiny_study_end_to_end_and_resume(tmp_path: Path, capsys):
    study = write_study(tmp_path)
    db = tmp_path / "out" / "h.db"
    url = f"sqlite:///{db}"
    assert main([str(study), "--storage", url, "--quiet"]) == 0
    frame = results.load(url, "tiny")
    assert len(frame) == 2 and set(frame["state"]) == {"complete"}
    assert sorted(frame["train.seed"]) == [0, 1]
    for col in ["val_loss", "swd", "flops_per_image", "params", "train_images_per_s", "mfu", "grad_clip_fraction"]:
        assert frame[col].notna().all(), col
    assert frame["fid"].isna().all()  # no Inception weights offline: recorded as unavailable
    # the sampler-fidelity guard and the calibration baselines are recorded with every trial
    assert (frame["sampler_fidelity"] > 0).all() and (frame["sampler_fidelity"] < 1).all()
    for kind in ("data", "noise", "mean_image"):  # their order is tested at a useful size in test_calibration.py
        assert frame[f"swd_baseline_{kind}"].notna().all()
    con = sqlite3.connect(db)
    fid_attrs = json.loads(con.execute("SELECT attrs_json FROM harness_metrics WHERE name='fid'").fetchone()[0])
    assert fid_attrs.get("reason")
    curve = con.execute("SELECT step, value FROM harness_metrics WHERE name='train_loss' AND trial_number=0").fetchall()
    assert [s for s, _ in curve] == [2, 4]
    config = json.loads(con.execute("SELECT config_json FROM harness_trials WHERE trial_number=1").fetchone()[0])
    assert config["train"]["seed"] == 1 and config["model"]["resolution"] == 16
    env = con.execute("SELECT host, torch_version, git_revision FROM harness_trials").fetchone()
    assert env[0] and env[1] == torch.__version__
    grids = [Path(p) for (p,) in con.execute("SELECT path FROM harness_artifacts WHERE kind='sample_grid'")]
    assert len(grids) == 2 and all(p.exists() for p in grids)
    # Optuna's own view of the same study
    ostudy = optuna.load_study(study_name="tiny", storage=url)
    assert [t.state.name for t in ostudy.trials] == ["COMPLETE", "COMPLETE"]
    # rerunning adds nothing
    capsys.readouterr()
    assert main([str(study), "--storage", url, "--quiet"]) == 0
    assert "nothing to run" in capsys.readouterr().out
    assert len(optuna.load_study(study_name="tiny", storage=url).trials) == 2
    # growing the grid runs only the new cells
    assert main([str(study), "--storage", url, "--quiet", "--set", "search.space.train.seed=[0, 1, 2]"]) == 0
    assert sorted(results.load(url, "tiny")["train.seed"]) == [0, 1, 2]


def test_non_finite_samples_fail_the_trial_and_never_score(tmp_path: Path, monkeypatch):
    """Issue 10: an unclipped schedule once completed a trial with all-black samples (NaN turned to 0) and a
    finite score. Non-finite samples now fail the trial with that reason."""
    from components.samplers import Ddim

    original = Ddim.coefficients

    def nan_x_weight(self, lt, ls, last):  # every update multiplies x_hat by NaN
        a, b, c = original(self, lt, ls, last)
        return a, b * float("nan"), c

    monkeypatch.setattr(Ddim, "coefficients", nan_x_weight)
    study = write_study(tmp_path, space="train.seed: [0]")
    url = f"sqlite:///{tmp_path / 'h.db'}"
    assert main([str(study), "--storage", url, "--quiet"]) == EXIT_ALL_FAILED  # its only trial failed
    frame = results.load(url, "tiny")
    assert list(frame["state"]) == ["failed"] and "non-finite samples" in frame.loc[0, "error"]
    assert "swd" not in frame.columns or frame["swd"].isna().all()


def test_generated_images_are_written_only_when_asked(tmp_path: Path):
    """eval.save_samples: every generated image as a PNG in the trial's samples/ folder (an artifact), a
    folder FID can read; without it no image but the grid reaches the disk."""
    from PIL import Image

    study = write_study(tmp_path, space="train.seed: [0, 1]")
    url = f"sqlite:///{tmp_path / 'h.db'}"
    assert main([str(study), "--storage", url, "--quiet", "--set", "eval.save_samples=true"]) == 0
    con = sqlite3.connect(tmp_path / "h.db")
    folders = [Path(p) for (p,) in con.execute("SELECT path FROM harness_artifacts WHERE kind='samples'")]
    assert len(folders) == 2
    for folder in folders:
        files = sorted(folder.glob("*.png"))
        assert [f.name for f in files] == [f"{i:05d}.png" for i in range(8)]  # eval.num_samples
        assert all(Image.open(f).size == (16, 16) and Image.open(f).mode == "RGB" for f in files)
        assert not folder.with_name("samples.part").exists()
    grid = folders[0].parent / "samples.png"
    assert grid.exists()
    plain = write_study(tmp_path, name="plain", space="train.seed: [0]")
    assert main([str(plain), "--storage", url, "--quiet"]) == 0
    (trial_dir,) = {
        Path(p).parent
        for (p,) in con.execute("SELECT path FROM harness_artifacts WHERE kind='sample_grid' AND study_name='plain'")
    }
    assert not (trial_dir / "samples").exists()


def test_trial_failed_by_optuna_for_missed_heartbeats_is_failed_in_the_harness_tables(tmp_path: Path):
    """A worker on another machine died: Optuna's stale-trial check fails its trial, and the next run of
    the study marks the harness row failed with the reason instead of leaving it "running"."""
    from harness.driver.recovery import HEARTBEAT_FAILED
    from harness.store import Store

    study = write_study(tmp_path, space="train.seed: [0]")
    url = f"sqlite:///{tmp_path / 'h.db'}"
    assert main([str(study), "--storage", url, "--quiet"]) == 0
    ostudy = optuna.load_study(study_name="tiny", storage=url)
    lost = ostudy.ask()
    Store(url).start_trial("tiny", lost.number, {}, {}, {"host": "another-machine", "pid": 1})
    ostudy.tell(lost, state=optuna.trial.TrialState.FAIL)  # what fail_stale_trials does to it
    assert main([str(study), "--storage", url, "--quiet"]) == 0
    frame = results.load(url, "tiny").set_index("trial_number")
    assert frame.loc[lost.number, "state"] == "failed"
    assert frame.loc[lost.number, "error"] == HEARTBEAT_FAILED
    assert frame.loc[0, "state"] == "complete"


def test_non_finite_loss_fails_one_trial_and_the_study_goes_on(tmp_path: Path, monkeypatch):
    from components.losses import VMse

    monkeypatch.setattr(
        VMse,
        "__call__",
        lambda self, eps_hat, eps, logsnr, slope=None: (eps_hat - eps).flatten(1).mean(1) * float("nan"),
    )
    study = write_study(tmp_path, space="diffusion.loss: [v_mse, mse]")
    url = f"sqlite:///{tmp_path / 'h.db'}"
    assert main([str(study), "--storage", url, "--quiet"]) == 0
    frame = results.load(url, "tiny").set_index("diffusion.loss")
    assert frame.loc["v_mse", "state"] == "failed"
    assert "non-finite loss" in frame.loc["v_mse", "error"] and "at step 0" in frame.loc["v_mse", "error"]
    assert frame.loc["mse", "state"] == "complete"
    states = {
        t.params["diffusion.loss"]: t.state.name for t in optuna.load_study(study_name="tiny", storage=url).trials
    }
    assert states == {"v_mse": "FAIL", "mse": "COMPLETE"}


SLOW_MAIN = """
import signal, sys, time, torch
signal.signal(signal.SIGINT, signal.default_int_handler)  # Ctrl-C as in a terminal (a background job ignores it)
step = torch.optim.AdamW.step
def slow_step(self, *a, **k):
    time.sleep(0.05)                      # slow training down so the test can stop it mid-way
    return step(self, *a, **k)
torch.optim.AdamW.step = slow_step
from harness.study import main
sys.exit(main(sys.argv[1:]))
"""


def start_slowed_study(tmp_path: Path) -> tuple[subprocess.Popen, list[str], dict, Path]:
    """A one-trial study in a slowed-down process, returned once its first checkpoint exists."""
    study = write_study(tmp_path, steps=200, ckpt=10, space="train.seed: [0]")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    args = [str(study), "--storage", f"sqlite:///{tmp_path / 'h.db'}", "--quiet"]
    proc = subprocess.Popen(
        [sys.executable, "-c", SLOW_MAIN, *args],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    found: list[Path] = []
    while not found and proc.poll() is None:  # no clock: the process ends by itself if it never checkpoints
        found = list((tmp_path / "tiny").glob("*/config_*/checkpoint/latest.pt"))
        time.sleep(0.1)
    assert found, proc.communicate(timeout=5) if proc.poll() is not None else "no checkpoint written"
    return proc, args, env, found[0]


def rerun(args: list[str], env: dict, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "harness.study", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300
    )


def test_killed_trial_resumes_from_its_checkpoint(tmp_path: Path):
    proc, args, env, checkpoint = start_slowed_study(tmp_path)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    step_at_kill = torch.load(checkpoint, weights_only=False)["step"]
    assert 0 < step_at_kill < 200
    done = rerun(args, env, tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"resumed from step {step_at_kill}" in done.stdout
    frame = results.load(args[2], "tiny")
    assert list(frame["state"]) == ["failed", "complete"]
    assert "interrupted" in frame.iloc[0]["error"]
    assert frame.iloc[1]["resumed_from_step"] == step_at_kill


def test_ctrl_c_stops_cleanly_and_the_rerun_resumes(tmp_path: Path):
    proc, args, env, _ = start_slowed_study(tmp_path)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, out + err
    assert "interrupted" in err and "Traceback" not in err
    frame = results.load(args[2], "tiny")
    assert list(frame["state"]) == ["failed"] and "Ctrl-C" in frame.iloc[0]["error"]
    done = rerun(args, env, tmp_path)
    assert done.returncode == 0 and "resumed from step" in done.stdout, done.stdout + done.stderr
    assert list(results.load(args[2], "tiny")["state"]) == ["failed", "complete"]


def test_changing_a_categorical_axis_of_a_stored_study_is_refused(tmp_path: Path, capsys):
    study = write_study(tmp_path, space="diffusion.loss: [mse]", steps=2)
    url = f"sqlite:///{tmp_path / 'h.db'}"
    assert main([str(study), "--storage", url, "--quiet"]) == 0
    capsys.readouterr()
    code = main([str(study), "--storage", url, "--quiet", "--set", "search.space.diffusion.loss=[mse, v_mse]"])
    err = capsys.readouterr().err
    assert code == 2 and "search.space.diffusion.loss" in err and err.count("\n") == 1
    assert len(optuna.load_study(study_name="tiny", storage=url).trials) == 1
