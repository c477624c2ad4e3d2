"""The report's plots and timing section on the fixture study of test_report: units on the axes, readable log axes,
no box over a handful of points, plots skipped (with the reason) when they carry no information, timings measured
under load flagged, identical networks never shown as a speed-up, and one line per unavailable reason."""

from __future__ import annotations

import matplotlib.pyplot as plt
import pytest
from test_report import make_study  # tests/ is on sys.path (pytest's rootdir-relative import)

from harness.report import data, plots, timing
from harness.report.render import write_report
from harness.report.tables import study_tables
from harness.store import Store


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("plots")
    url = make_study(tmp / "h.db")
    tables = study_tables(Store(url), "ablation")
    frame = tables.trials.assign(config=data.config_labels(tables))
    return tables, timing.with_load(frame, timing.trial_load(tables.metrics)), tmp


def same_network(frame):
    return frame.assign(flops_per_image=2e9, params=1e6)


def visible_labels(ax, which: str) -> list[str]:
    ax.figure.canvas.draw()
    axis = ax.yaxis if which == "y" else ax.xaxis
    low, high = sorted(ax.get_ylim() if which == "y" else ax.get_xlim())
    return [
        t.get_text() for t in axis.get_ticklabels() if t.get_text() and low <= t.get_position()[which == "y"] <= high
    ]


@pytest.mark.parametrize(("values", "log"), [([0.12, 0.5], False), ([0.06, 1.1], True), ([1e6, 3e9], True)])
def test_a_value_axis_always_shows_several_labels(values, log):
    fig, ax = plt.subplots()
    ax.plot([0, 1], values)
    assert plots.log_scale(ax, "y", values) is log
    assert len(visible_labels(ax, "y")) >= 3, visible_labels(ax, "y")
    plt.close(fig)


def test_axes_name_their_units(study):
    tables, _, _ = study
    assert data.metric_label(tables, "mfu") == "MFU (%)"
    assert data.metric_label(tables, "train_images_per_s") == "training throughput (images/s)"
    assert data.metric_label(tables, "swd") == "SWD (x1e3)"  # the fixture records no scale: the metric's own
    assert data.metric_label(tables, "swd_16") == "SWD at 16 px (x1e3)"


def test_few_trials_per_level_get_points_and_a_mean_with_its_interval(study, tmp_path):
    tables, frame, _ = study
    (many,) = [f for f in plots.plot_effects(tables, frame, tmp_path) if "schedule" in f.title]
    assert many.caption.startswith("Box:")  # six trials per level
    few = frame[frame["train.seed"] != 2]  # four per level
    (figure,) = [f for f in plots.plot_effects(tables, few, tmp_path) if "schedule" in f.title]
    assert "no box" in figure.caption and "95% t interval" in figure.caption


def test_pareto_and_throughput_are_skipped_when_every_arm_runs_the_same_network(study, tmp_path):
    tables, frame, _ = study
    assert plots.plot_pareto(tables, frame, tmp_path) and plots.plot_throughput(tables, frame, tmp_path)
    with pytest.raises(plots.Skip, match="same FLOPs per image"):
        plots.plot_pareto(tables, same_network(frame), tmp_path)
    with pytest.raises(plots.Skip, match="same network"):
        plots.plot_throughput(tables, same_network(frame), tmp_path)


def test_throughput_measured_under_load_is_flagged(study, tmp_path):
    tables, frame, _ = study
    (figure,) = plots.plot_throughput(tables, frame, tmp_path)
    assert figure.warning.startswith("Measured under load")
    assert "4 of 12 complete trials were timed under load" in timing.load_summary(frame)
    table = timing.timing_table(frame)
    assert list(table["under load"]) == ["1 of 3"] * 4 and list(table["other load (cores)"]) == ["1.50"] * 4


def test_timing_notes_never_claim_a_speed_up_between_identical_networks(study):
    tables, frame, _ = study
    notes = timing.timing_notes(tables, same_network(frame))
    assert len(notes) == 2 and all("identical networks" in n and "not an effect" in n for n in notes)
    assert "2.00x" in notes[1] or "2.00x" in notes[0]  # the schedule's levels: 500 vs 250 images/s, noted as noise
    differing = timing.timing_notes(tables, frame)
    schedule = [n for n in differing if n.startswith("diffusion.schedule=") and "training images/s" in n]
    assert schedule and "-50 %" in schedule[0] and "resolved" in schedule[0] and "under load (4 of 12" in schedule[0]
    mfu = [n for n in differing if "MFU" in n]
    assert mfu and all("within the noise" in n for n in mfu)  # MFU equal across arms in the fixture


def test_swd_levels_need_two_levels(study, tmp_path):
    tables, frame, _ = study
    assert plots.plot_swd_levels(tables, frame, tmp_path)
    with pytest.raises(plots.Skip, match="one pyramid level"):
        plots.plot_swd_levels(tables, frame.drop(columns=["swd_32"]), tmp_path)


def test_one_reason_is_shown_once_with_every_metric_it_applies_to(tmp_path):
    url = make_study(tmp_path / "h.db", "offline")
    how_to = "no Inception weights (offline): put the file at /somewhere/inception.pt"
    store = Store(url)
    for number in range(3):
        store.add_metrics(
            "offline",
            number,
            [{"name": n, "value": None, "attrs": {"reason": how_to}} for n in ("fid_offline", "kid_offline")],
        )
    html = write_report(store, "offline", tmp_path / "out").read_text()
    assert html.count("/somewhere/inception.pt") == 1
    assert "<strong>fid_offline</strong>, <strong>kid_offline</strong> (trials 0, 1, 2)" in html
