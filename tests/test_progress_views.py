"""The parts of the live view, each alone: the console's rate-limited plain lines and its bars, the study's
progress line and exit status, Optuna's intermediate values and user attributes, the TensorBoard writer on a
resumed trial, ``config.yaml`` written atomically, a failure the database will not take. The whole flow on a
tiny study is tests/test_study_view.py."""

from __future__ import annotations

import io
from datetime import datetime, timedelta
from pathlib import Path

import optuna
import pytest
import torch
import yaml

import harness.trial.config_file as config_file
from harness.config import load_study
from harness.driver.console import Console, progress_interval
from harness.driver.dashboard import MAX_CURVE_POINTS, OptunaEvents, set_metric_names
from harness.driver.objective import Attempt, record_failure
from harness.driver.progress import EXIT_ALL_FAILED, StudyProgress, duration_text
from harness.errors import UsageError
from harness.study import main
from harness.trial.config_file import write_config_file
from harness.trial.events import Fanout, TrialEvents
from harness.trial.tensorboard import TensorBoardEvents

STUDY = """
name: units
dataset: {name: shapes, resolution: 16, num_images: 48}
model: {name: uvit, preset: tiny}
train: {steps: 4, batch_size: 4, device: cpu}
search: {space: {train.seed: [0, 1]}}
objectives: [{metric: val_loss}]
"""


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_plain_counter_lines_are_rate_limited_and_the_last_count_always_shows():
    clock, out = Clock(), io.StringIO()
    trial = Console(interactive=False, interval_s=10, clock=clock, out=out).trial(3)
    trial.phase("training", start=0, total=100, batch=8)
    for step in range(1, 101):
        clock.now += 0.5  # a step every half second: a counter line at most every 20 steps
        if step % 10 == 0:
            trial.log(step, 1.0 / step, 64.0)
        trial.count(step, 100)
    lines = out.getvalue().splitlines()
    assert lines[0] == "trial 3: training: 100 steps, batch 8"
    assert [line.split(",")[0] for line in lines[1:]] == [
        f"trial 3: training step {s}/100" for s in (20, 40, 60, 80, 100)
    ]
    assert lines[-1] == "trial 3: training step 100/100, loss 0.0100, 64.0 img/s"
    trial.phase("metrics", names=["swd", "fid"])
    trial.count(0, 2, "swd")
    trial.count(1, 2, "fid")  # every metric as it starts, however soon after the last line
    assert out.getvalue().splitlines()[-3:] == [
        "trial 3: metrics: swd, fid",
        "trial 3: metric 1/2: swd",
        "trial 3: metric 2/2: fid",
    ]
    assert "\r" not in out.getvalue()


def test_quiet_prints_only_essential_lines_and_a_terminal_gets_bars():
    out = io.StringIO()
    quiet = Console(quiet=True, interactive=True, out=out)
    trial = quiet.trial(0)
    trial.phase("training", start=0, total=4, batch=2)
    trial.count(4, 4)
    quiet.line("progress: ...")
    quiet.line("trial 0: complete", essential=True)
    assert out.getvalue() == "trial 0: complete\n"
    terminal = io.StringIO()
    console = Console(interactive=True, out=terminal)
    trial = console.trial(1)
    trial.phase("training", start=2, total=4, batch=2)  # a resumed trial: the bar starts at its step
    assert console.bar is not None and console.bar.n == 2
    trial.log(4, 0.5, 8.0)
    trial.count(4, 4)
    trial.close()
    assert console.bar is None and "\r" in terminal.getvalue()  # tqdm redraws its line
    assert terminal.getvalue().endswith("trial 1: training step 4/4, loss 0.5000, 8.0 img/s\n")  # what stays
    assert terminal.getvalue().startswith("trial 1: training: resuming at step 2 of 4, batch 2\n")


def test_progress_interval_from_the_environment(monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("HARNESS_PROGRESS_S", "2.5")
    assert progress_interval() == 2.5
    for bad in ("-1", "soon", "inf", "nan"):
        monkeypatch.setenv("HARNESS_PROGRESS_S", bad)
        with pytest.raises(UsageError, match="HARNESS_PROGRESS_S"):
            progress_interval()
    (tmp_path / "s.yaml").write_text(STUDY)
    assert main([str(tmp_path / "s.yaml"), "--storage", f"sqlite:///{tmp_path / 'h.db'}"]) == 2
    assert capsys.readouterr().err.startswith("error: HARNESS_PROGRESS_S: ") and not (tmp_path / "h.db").exists()


def frozen(number: int, state: optuna.trial.TrialState, seconds: float, error: str | None = None):
    start = datetime(2024, 1, 1)
    return optuna.trial.FrozenTrial(
        number=number,
        state=state,
        value=1.0 if state == optuna.trial.TrialState.COMPLETE else None,
        datetime_start=start,
        datetime_complete=start + timedelta(seconds=seconds),
        params={},
        distributions={},
        user_attrs={"error": error} if error else {},
        system_attrs={},
        intermediate_values={},
        trial_id=number,
    )


def test_progress_line_eta_and_exit_status():
    S = optuna.trial.TrialState
    clock = Clock()
    progress = StudyProgress("s", planned=10, todo=6, clock=clock)
    assert progress.line(4, 1).endswith("ETA after the first complete trial")
    clock.now = 125
    progress.finished(frozen(0, S.FAIL, 1, error="Diverged: non-finite loss"))
    assert progress.all_failed and progress.exit_code == EXIT_ALL_FAILED
    progress.finished(frozen(1, S.COMPLETE, 40))
    progress.finished(frozen(2, S.COMPLETE, 80))
    progress.finished(frozen(3, S.PRUNED, 0))  # a cell another worker holds
    # 6 planned in this run, 3 ran (1 failed, 2 complete at 60 s on average): 3 x 60 s left
    assert progress.eta_s() == 180
    assert progress.line(6, 2) == (
        "progress: 6 of 10 trials complete, 2 running, 1 failed in this run; elapsed 2m05s, ETA 3m00s"
    )
    assert (
        progress.exit_code == 0
        and progress.counts_text() == "2 complete, 1 failed, 1 skipped (cells other workers hold)"
    )
    assert progress.failures == ["trial 0: Diverged: non-finite loss"]
    skipped_only = StudyProgress("s", planned=2, todo=2)
    skipped_only.finished(frozen(0, S.PRUNED, 0))
    assert skipped_only.exit_code == 0  # nothing ran, nothing failed
    assert [duration_text(s) for s in (0, 59.4, 61, 3600 * 2 + 185)] == ["0s", "59s", "1m01s", "2h03m"]


def test_optuna_curves_are_thinned_and_multi_objective_studies_get_attrs_only():
    study = optuna.create_study()
    set_metric_names(study, ["val_loss"])
    assert study.metric_names == ["val_loss"]
    trial = study.ask()
    events = OptunaEvents(trial, ["val_loss"], steps=25_000, log_every=10)  # 2500 loss points: every 3rd kept
    for step in range(1010, 25_001, 10):  # a trial that resumed from its checkpoint at step 1000
        events.log(step, 1.0 / step, None)
    reported = study.trials[0].intermediate_values
    assert 25_000 in reported and 1020 in reported and 1010 not in reported and 1000 not in reported
    earlier = [{"name": "train_loss", "value": 1.0 / s, "step": s} for s in range(10, 1001, 10)]  # the stored curve
    events.values([*earlier, {"name": "swd", "value": 2.0}, {"name": "val_loss", "value": 0.3}], 25_000)
    stored = study.trials[0]
    assert len(stored.intermediate_values) == 2500 // 3 + 1 <= MAX_CURVE_POINTS  # every 3rd point, and the last
    assert all(step % 30 == 0 or step == 25_000 for step in stored.intermediate_values)
    assert stored.intermediate_values[30] == 1.0 / 30 and stored.user_attrs == {"swd": 2.0}  # not the objective
    both = optuna.create_study(directions=["minimize", "maximize"])
    set_metric_names(both, ["swd", "train_images_per_s"])
    trial = both.ask()
    events = OptunaEvents(trial, ["swd", "train_images_per_s"], steps=4, log_every=2)
    events.log(2, 0.3, None)  # Optuna has no intermediate values for several objectives: nothing, no error
    events.values([{"name": "swd", "value": 1.0}, {"name": "fid", "value": None}, {"name": "mfu", "value": 0.1}], 4)
    stored = both.trials[0]
    assert stored.intermediate_values == {} and stored.user_attrs == {"mfu": 0.1}


class Recorder:
    def __init__(self, logdir: str, purge_step: int | None):
        self.purge_step, self.calls, self.closed = purge_step, [], False

    def add_scalar(self, *args):
        self.calls.append(("scalar", *args))

    def add_images(self, tag, images, step, dataformats):
        self.calls.append(("images", tag, tuple(images.shape), step, dataformats))

    def add_text(self, *args):
        self.calls.append(("text", *args))

    def close(self):
        self.closed = True


def test_tensorboard_writer_on_a_resumed_trial(tmp_path: Path):
    """A retry resuming at step 6 hides the earlier attempt's points after 6 (purge_step 7) and writes the rest."""
    made: list[Recorder] = []
    events = TensorBoardEvents(
        tmp_path / "tb" / "run", "trial 5: seed=1", writer=lambda d, p: made.append(Recorder(d, p)) or made[-1]
    )
    watchers = Fanout(TrialEvents(), events)
    watchers.phase("training", start=6, total=10, batch=4)
    watchers.log(8, 0.25, 100.0)
    watchers.log(10, 0.2, None)
    watchers.samples(torch.zeros(4, 3, 8, 8, dtype=torch.uint8), 10)
    watchers.values(
        [
            {"name": "swd", "value": 3.0},
            {"name": "fid", "value": None},
            {"name": "val_loss_by_logsnr", "value": 1.0, "step": 0},
        ],
        10,
    )
    watchers.close()
    (writer,) = made
    assert writer.purge_step == 7 and writer.closed and (tmp_path / "tb" / "run").is_dir()
    assert writer.calls == [
        ("text", "trial", "trial 5: seed=1", 0),
        ("scalar", "train/loss", 0.25, 8),
        ("scalar", "train/images_per_s", 100.0, 8),
        ("scalar", "train/loss", 0.2, 10),
        ("images", "samples", (4, 3, 8, 8), 10, "NCHW"),
        ("scalar", "metrics/swd", 3.0, 10),
    ]


def test_config_yaml_is_replaced_whole_or_not_at_all(tmp_path: Path, monkeypatch):
    (tmp_path / "s.yaml").write_text(STUDY)
    loaded = load_study(tmp_path / "s.yaml")
    first, second = loaded.trial_config({"train.seed": 0}), loaded.trial_config({"train.seed": 1})
    path = write_config_file(first, tmp_path / "trial")
    assert yaml.safe_load(path.read_text()) == {k: v for k, v in first.to_json().items() if k != "storage"}
    before = path.read_text()

    def dies_half_way(data, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(config_file.yaml, "safe_dump", dies_half_way)
    with pytest.raises(OSError, match="No space left"):
        write_config_file(second, tmp_path / "trial")
    assert path.read_text() == before  # the old file, whole
    assert sorted(p.name for p in (tmp_path / "trial").iterdir()) == ["config.yaml"]  # no temporary file left


def test_a_failure_the_database_does_not_take_is_still_shown():
    class Gone:
        def finish_trial(self, *args):
            raise ConnectionError("server closed the connection")

    class Trial:
        number = 4

    note = record_failure(Gone(), "s", Trial(), Attempt(claimed=True), "Diverged: nan", 1.0)  # type: ignore[arg-type]
    assert note == " (not recorded in the database: ConnectionError: server closed the connection)"
