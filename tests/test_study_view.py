"""What a researcher sees of a running study, end to end on tiny studies: the plain-log transcript (phases in
order, counters, progress, the summary), failures wherever they are raised (printed, counted, in the harness
tables, in Optuna and in the report), the exit status of a run whose every trial failed, the optuna-dashboard
view through Optuna's API, TensorBoard event files, and ``config.yaml`` beside the checkpoints."""

from __future__ import annotations

import contextlib
import io
import json
import re
import sqlite3
from pathlib import Path

import optuna
import pytest
import yaml
from sqlalchemy.exc import OperationalError
from test_study_run import write_study  # tests/ is on sys.path (pytest's rootdir-relative import)

import harness.driver.objective as objective_module
import harness.driver.run as run_module
from harness import results
from harness.driver.progress import EXIT_ALL_FAILED
from harness.report.render import render_report
from harness.study import main
from harness.trial import tensorboard as tb

PHASES = [  # what a trial prints, in order (HARNESS_PROGRESS_S=0: every counter)
    r"trial {n}: train\.seed={n}$",
    r"trial {n}: training: 4 steps, batch 4$",
    r"trial {n}: training step 1/4$",  # no loss point yet (log_every 2)
    r"trial {n}: training step 2/4, loss \d\.\d{{4}}",  # images/s once the meter has warmed up
    r"trial {n}: training step 3/4, loss \d\.\d{{4}}",
    r"trial {n}: training step 4/4, loss \d\.\d{{4}}",
    r"trial {n}: validation loss on 5 held-out images$",
    r"trial {n}: sampling 8 images \(2 sampler steps\)$",
    r"trial {n}: sampling 8/8 images$",
    r"trial {n}: metrics: swd, flops, throughput, memory, mfu, fid$",
    *[rf"trial {{n}}: metric {i + 1}/6: {m}$" for i, m in enumerate(["swd", "flops", "throughput", "memory", "mfu"])],
    r"trial {n}: metric 6/6: fid$",
    r"trial {n}: calibration baselines for swd, fid$",
    r"trial {n}: complete in [\d.]+s: val_loss=[\d.]+$",
]


class Recorder:
    """A stand-in for TensorBoard's SummaryWriter: what a trial wrote, by call."""

    made: list[Recorder] = []

    def __init__(self, logdir: str, purge_step: int | None):
        self.logdir, self.purge_step, self.calls, self.closed = Path(logdir), purge_step, [], False
        Recorder.made.append(self)

    def __getattr__(self, name):  # add_scalar, add_images, add_text
        return lambda *args, **kwargs: self.calls.append((name, args, kwargs))

    def close(self):
        self.closed = True


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """A 2-trial study run in this process with stdout captured (not a terminal: plain lines), every counter
    printed (HARNESS_PROGRESS_S=0) and TensorBoard on, through the recorder."""
    folder = tmp_path_factory.mktemp("view")
    url = f"sqlite:///{folder / 'h.db'}"
    out, err = io.StringIO(), io.StringIO()
    Recorder.made.clear()
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(folder)
        mp.setenv("HARNESS_CACHE_DIR", str(folder / "cache"))
        mp.setenv("HARNESS_PROGRESS_S", "0")
        mp.delenv("HARNESS_INCEPTION_WEIGHTS", raising=False)
        mp.setattr(run_module, "tensorboard_available", lambda: True)
        mp.setattr(tb, "summary_writer", Recorder)
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = main([str(write_study(folder)), "--storage", url, "--tensorboard"])
    return {"code": code, "out": out.getvalue(), "err": err.getvalue(), "url": url, "db": folder / "h.db"}


def test_plain_log_shows_each_phase_in_order_and_the_final_counts(tiny_run):
    assert tiny_run["code"] == 0, tiny_run["out"] + tiny_run["err"]
    out = tiny_run["out"]
    assert "\r" not in out and "\x1b" not in out  # plain lines: no bars, no cursor movement
    lines = out.splitlines()
    expected = [
        r"study 'tiny': running 2 of 2 trials$",
        r"progress: 0 of 2 trials complete, 1 running, 0 failed in this run; elapsed \d+s, "
        r"ETA after the first complete trial$",
        *[p.format(n=0) for p in PHASES],
        r"progress: 1 of 2 trials complete, 1 running, 0 failed in this run; elapsed \d+s, ETA \d+s$",
        *[p.format(n=1) for p in PHASES],
        r"study 'tiny': this run 2 complete, 0 failed; 2 of 2 planned trials complete in the database; ",
    ]
    assert len(lines) == len(expected), out
    for line, pattern in zip(lines, expected, strict=True):
        assert re.match(pattern, line), (pattern, line)


def test_quiet_keeps_the_essential_lines(tiny_run, tmp_path, monkeypatch, capsys):
    """--quiet on a grown grid: the study line, the trial, its outcome, the summary; no phase, counter or
    progress line."""
    monkeypatch.setenv("HARNESS_CACHE_DIR", str(tiny_run["db"].parent / "cache"))
    monkeypatch.chdir(tiny_run["db"].parent)
    grow = ["--set", "search.space.train.seed=[0, 1, 2]", "--quiet"]
    assert main([str(tiny_run["db"].parent / "tiny.yaml"), "--storage", tiny_run["url"], *grow]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [re.sub(r"[\d.]+s:.*|;.*", "", line) for line in lines] == [
        "study 'tiny': running 1 of 3 trials",
        "trial 2: train.seed=2",
        "trial 2: complete in ",
        "study 'tiny': this run 1 complete, 0 failed",
    ]


def test_the_dashboard_view_through_optuna(tiny_run):
    """optuna-dashboard reads Optuna's tables: the objective by its metric name, the training loss as
    intermediate values (its learning curves) equal to the harness's curve, every other scalar metric as a
    numeric user attribute equal to its harness row."""
    study = optuna.load_study(study_name="tiny", storage=tiny_run["url"])
    assert study.metric_names == ["val_loss"]
    con = sqlite3.connect(tiny_run["db"])
    for trial in study.trials:
        rows = con.execute(
            "SELECT name, value, step FROM harness_metrics WHERE study_name='tiny' AND trial_number=?",
            (trial.number,),
        ).fetchall()
        curve = {step: value for name, value, step in rows if name == "train_loss"}
        assert trial.intermediate_values == curve and sorted(curve) == [2, 4]
        scalars = {name: value for name, value, step in rows if step is None and value is not None}
        attrs = {k: v for k, v in trial.user_attrs.items() if k != "workdir"}
        assert attrs == {k: float(f"{v:.6g}") for k, v in scalars.items() if k != "val_loss"}  # 6 digits shown
        assert len(attrs) > 15 and all(isinstance(v, float) for v in attrs.values())
        assert "swd" in attrs and "train_images_per_s" in attrs and "val_loss" not in attrs


def test_config_yaml_beside_each_trials_checkpoints(tiny_run):
    con = sqlite3.connect(tiny_run["db"])
    for config_json, grid in con.execute(
        "SELECT t.config_json, a.path FROM harness_trials t JOIN harness_artifacts a "
        "ON a.trial_number = t.trial_number AND a.kind = 'sample_grid'"
    ):
        folder = Path(grid).parent
        assert (folder / "checkpoint" / "latest.pt").exists()
        text = (folder / "config.yaml").read_text()
        assert text.startswith("# The resolved configuration")
        stored = json.loads(config_json)
        assert yaml.safe_load(text) == {k: v for k, v in stored.items() if k != "storage"}
        assert [p.name for p in folder.iterdir() if p.name.endswith(".tmp")] == []


def test_tensorboard_events_per_trial(tiny_run):
    """--tensorboard: one writer per trial, in the trial's folder, with the loss curve, the sample grid and the
    scalar metrics (through a recorder here; the real files in test_tensorboard_files_when_installed)."""
    con = sqlite3.connect(tiny_run["db"])
    assert len(Recorder.made) == 2
    for number, writer in enumerate(Recorder.made):
        (grid,) = con.execute(f"SELECT path FROM harness_artifacts WHERE trial_number={number} AND kind='sample_grid'")
        assert writer.logdir.parent == Path(grid[0]).parent / "tensorboard" and writer.closed
        assert writer.purge_step == 1  # a fresh trial: training starts at step 0
        scalars = {(a[0], a[2]): a[1] for name, a, _ in writer.calls if name == "add_scalar"}
        curve = dict(
            con.execute(f"SELECT step, value FROM harness_metrics WHERE name='train_loss' AND trial_number={number}")
        )
        assert {step: v for (tag, step), v in scalars.items() if tag == "train/loss"} == curve
        (swd,) = con.execute(f"SELECT value FROM harness_metrics WHERE name='swd' AND trial_number={number}")
        assert scalars[("metrics/swd", 4)] == swd[0]
        (images,) = [a for name, a, _ in writer.calls if name == "add_images"]
        assert images[0] == "samples" and tuple(images[1].shape) == (4, 3, 16, 16) and images[2] == 4
        assert [a[1] for name, a, _ in writer.calls if name == "add_text"] == [f"trial {number}: train.seed={number}"]


def test_tensorboard_files_when_installed(tmp_path, monkeypatch, capsys):
    """The real event files, read back with TensorBoard's own reader (skipped where tensorboard is not
    installed: it is an optional extra)."""
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HARNESS_CACHE_DIR", str(tmp_path / "cache"))
    url = f"sqlite:///{tmp_path / 'h.db'}"
    assert (
        main([str(write_study(tmp_path, space="train.seed: [0]")), "--storage", url, "--quiet", "--tensorboard"]) == 0
    )
    (logdir,) = {p.parent for p in tmp_path.glob("tiny/*/config_*/tensorboard/*/events.out.tfevents.*")}
    events = EventAccumulator(str(logdir)).Reload()
    curve = [(e.step, e.value) for e in events.Scalars("train/loss")]
    stored = results.curves(url, "tiny", "train_loss")
    assert [s for s, _ in curve] == list(stored["step"]) == [2, 4]
    assert [v for _, v in curve] == pytest.approx(list(stored["value"]), rel=1e-6)  # float32 in the event file
    assert "metrics/swd" in events.Tags()["scalars"] and events.Images("samples")[0].step == 4


def test_tensorboard_missing_is_one_note(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HARNESS_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(run_module, "tensorboard_available", lambda: False)
    study = write_study(tmp_path, space="train.seed: [0]", steps=2)
    assert main([str(study), "--storage", f"sqlite:///{tmp_path / 'h.db'}", "--quiet", "--tensorboard"]) == 0
    err = capsys.readouterr().err
    assert err.count("tensorboard package is not installed") == 1
    assert not list(tmp_path.glob("tiny/*/config_*/tensorboard"))


def test_a_run_whose_every_trial_failed_exits_1(tmp_path, monkeypatch, capsys):
    """Every trial diverges: each is printed with its reason as it fails, the summary counts them, the last
    line (stderr) says the run failed, and the exit status is 1; the harness tables and Optuna hold the
    reasons."""
    from components.losses import Mse

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HARNESS_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(Mse, "__call__", lambda self, eps_hat, *rest, **kw: eps_hat.flatten(1).mean(1) * float("nan"))
    url = f"sqlite:///{tmp_path / 'h.db'}"
    assert main([str(write_study(tmp_path)), "--storage", url, "--quiet"]) == EXIT_ALL_FAILED == 1
    captured = capsys.readouterr()
    reason = "Diverged: non-finite loss (nan) at step 0"
    assert captured.out.splitlines()[1:-1] == [
        "trial 0: train.seed=0",
        f"trial 0: failed: {reason}",
        "trial 1: train.seed=1",
        f"trial 1: failed: {reason}",
    ]
    assert captured.out.splitlines()[-1].startswith("study 'tiny': this run 0 complete, 2 failed; 0 of 2 planned")
    assert captured.err.splitlines()[-1] == (
        f"error: study 'tiny': every trial of this run failed (2); the first: trial 0: {reason}"
    )
    frame = results.load(url, "tiny")
    assert list(frame["state"]) == ["failed", "failed"] and set(frame["error"]) == {reason}
    trials = optuna.load_study(study_name="tiny", storage=url).trials
    assert [(t.state.name, t.user_attrs["error"]) for t in trials] == [("FAIL", reason)] * 2


def test_failures_raised_before_the_trial_runs_are_printed_recorded_and_reported(tmp_path, monkeypatch, capsys):
    """Issue 16: a trial failing before the objective's own handling left no harness row and no line. Now a
    trial whose provenance cannot be read (before its claim) and one whose claim meets a locked database are
    printed, counted, rowed, failed in Optuna with the reason, and listed by the report; the third trial
    completes, so the run exits 0."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HARNESS_CACHE_DIR", str(tmp_path / "cache"))
    calls = {"env": 0}
    environment, claim = objective_module.environment, objective_module.claim_trial

    def flaky_environment(device):
        calls["env"] += 1
        if calls["env"] == 2:  # trial 1
            raise RuntimeError("cannot read the device's name")
        return environment(device)

    def locked_claim(store, study, cell, number, params, *rest):
        if params == {"train.seed": 2}:
            raise OperationalError("INSERT INTO harness_claims", {}, Exception("database is locked"))
        return claim(store, study, cell, number, params, *rest)

    monkeypatch.setattr(objective_module, "environment", flaky_environment)
    monkeypatch.setattr(objective_module, "claim_trial", locked_claim)
    url = f"sqlite:///{tmp_path / 'h.db'}"
    study = write_study(tmp_path, steps=2, space="train.seed: [0, 1, 2]")
    assert main([str(study), "--storage", url, "--quiet"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert "trial 1: failed: RuntimeError: cannot read the device's name" in out
    assert "trial 2: failed: OperationalError: (builtins.Exception) database is locked" in out[-2]
    assert "this run 1 complete, 2 failed; 1 of 3 planned trials complete" in out[-1]
    frame = results.load(url, "tiny").set_index("trial_number")
    assert list(frame["state"]) == ["complete", "failed", "failed"]
    assert frame.loc[1, "error"].startswith("RuntimeError: cannot read the device's name | ")
    assert "database is locked" in frame.loc[2, "error"] and frame.loc[2, "train.seed"] == 2
    config = json.loads(
        sqlite3.connect(tmp_path / "h.db")
        .execute("SELECT config_json FROM harness_trials WHERE trial_number = 2")
        .fetchone()[0]
    )
    assert config["train"]["seed"] == 2  # the resolved config of the failed trial is kept
    trials = optuna.load_study(study_name="tiny", storage=url).trials
    assert [t.state.name for t in trials] == ["COMPLETE", "FAIL", "FAIL"]
    assert trials[2].user_attrs["error"] == frame.loc[2, "error"]
    page = render_report(url, "tiny", tmp_path / "report").read_text()
    problems = page[page.index('id="problems-table"') :]
    assert "cannot read the device&#39;s name" in problems and "database is locked" in problems
