"""A tiny study run end to end through ``harness.study`` and reported through ``harness.report``: the
counts come from the database, the effects are computed again by hand."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from harness import results
from harness.report.__main__ import main as report_main
from harness.store import Store
from harness.study import main as study_main

TINY_STUDY = """
name: tiny_report
seed: 0
dataset: {name: shapes, resolution: 16, num_images: 48}
model: {name: uvit, preset: tiny, stem: {name: wavelet, levels: 1}}
diffusion: {schedule: {name: cosine}, loss: mse}
train: {steps: 4, batch_size: 4, warmup_steps: 2, log_every: 2, checkpoint_every: 0, device: cpu}
eval: {num_samples: 8, batch_size: 8, grid_size: 4, sampler: {name: ddim, steps: 2},
       metrics: [swd, flops, throughput, memory, mfu, fid]}
search:
  sampler: grid
  space:
    diffusion.schedule: [{name: cosine}, {name: shifted_cosine, base_resolution: 8}]
    train.seed: [0, 1]
objectives: [{metric: val_loss, direction: minimize}, {metric: swd, direction: minimize}]
"""


def test_report_of_a_real_tiny_study(tmp_path, monkeypatch):
    """A tiny study run through ``harness.study``, reported: counts from the database, effects by hand."""
    monkeypatch.setenv("HARNESS_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("HARNESS_INCEPTION_WEIGHTS", raising=False)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "tiny.yaml").write_text(TINY_STUDY)
    url = f"sqlite:///{tmp_path / 'h.db'}"
    assert study_main(["tiny.yaml", "--storage", url, "--quiet"]) == 0
    assert report_main(["--study", "tiny_report", "--storage", url]) == 0
    out = tmp_path / "reports" / "tiny_report"
    frame = results.load(url, "tiny_report")
    trials = pd.read_csv(out / "trials.csv")
    metric_columns = [c for c in frame.columns if c not in results.TRIAL_COLUMNS + ["diffusion.schedule", "train.seed"]]
    assert len(trials) == len(frame) == 4
    assert set(metric_columns) <= set(trials.columns) and {"val_loss", "swd", "flops_per_image"} <= set(trials.columns)
    summary = pd.read_csv(out / "summary.csv")
    assert len(summary) == 2 * 2  # one factor x two levels x two objectives
    for metric in ("val_loss", "swd"):
        by = frame.pivot(index="train.seed", columns="diffusion.schedule", values=metric)
        d = (by["shifted_cosine(base_resolution=8)"] - by["cosine"]).to_numpy()
        half = stats.t.ppf(0.975, len(d) - 1) * d.std(ddof=1) / np.sqrt(len(d))
        row = summary[(summary["objective"] == metric) & (summary["level"] != "cosine")].iloc[0]
        assert row["test"] == "paired t" and row["n_pairs"] == 2
        assert (row["diff"], row["diff_ci_low"], row["diff_ci_high"]) == pytest.approx(
            (d.mean(), d.mean() - half, d.mean() + half)
        )
    html = (out / "index.html").read_text()
    assert "Metrics recorded as unavailable" in html and "<strong>fid</strong>, " in html  # no Inception weights
    assert html.count("no Inception weights for FID/KID") == 1  # the how-to once, for every metric it concerns
    assert "effect_diffusion.schedule_val_loss.png" in html and (out / "train_loss.png").is_file()
    assert 'id="verdict-list"' in html and html.index('id="verdict"') < html.index('id="effects"')
    # every timing carries the load it was measured under; identical networks: no throughput plot, a note instead
    metrics = Store(url).metrics("tiny_report")
    for name in ("train_images_per_s", "sample_images_per_s", "mfu"):
        for text in metrics.loc[metrics["name"] == name, "attrs_json"]:
            attrs = json.loads(text)
            assert (
                attrs["other_load_cores"] >= 0 and attrs["torch_threads"] >= 1 and attrs["under_load"] in (True, False)
            )
    assert "throughput.png" not in html and "its levels run identical networks" in html
