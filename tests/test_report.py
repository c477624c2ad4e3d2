"""harness.report (its tables and effects) and ``harness.query --summary`` on a fixture database.

The fixture is written through the harness's Store API plus a real Optuna study of the same name in the
same SQLite file, shaped like the runner's output: a 2 x 2 grid of factors x 3 seeds of complete trials,
one failed, one pruned and one running trial, loss curves, per-bucket validation losses and sample grids.
"""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import optuna
import pandas as pd
import pytest
from PIL import Image
from scipy import stats

from harness import results
from harness.query import main as query_main
from harness.report.__main__ import main as report_main
from harness.report.comparability import add_basis_columns, comparability_warnings, metric_bases
from harness.report.data import pareto_mask
from harness.report.effects import effects
from harness.store import Store

SCHEDULES = ["cosine", {"name": "shifted_cosine", "base_resolution": 32}]
SCHEDULE_LABELS = ["cosine", "shifted_cosine(base_resolution=32)"]
LOSSES = ["mse", "multiscale"]
SEEDS = [0, 1, 2]
FID_ATTRS = {  # the runner's shape (harness.metrics.fid): only some attrs decide comparability
    "n_generated": 256,
    "n_reference": 512,
    "mode": "clean",
    "reference_fingerprint": "shapes-16-v1",
    "extractor": {"name": "InceptionV3W", "sha256": "f58cb9b6ec323ed63459aa4fb441fe75", "path": "/a/b.pt"},
    "image_shape": [3, 16, 16],
}
ROOT = Path(__file__).resolve().parents[1]


def fid_value(schedule: int, loss: int, seed: int) -> float:
    """Deterministic, irregular values (so that paired and unpaired intervals differ)."""
    return 40.0 - 6.0 * schedule - 2.0 * loss + [0.0, 1.7, -0.9][seed] + 0.37 * schedule * seed + 0.11 * loss * seed


def make_study(
    db: Path,
    name: str = "ablation",
    *,
    fid_n: dict[int, int] | None = None,
    complete: bool = True,
    tmp: Path | None = None,
    fid: Callable[[int, int, int], float] = fid_value,
) -> str:
    """Write a study to ``db``; returns the storage URL. ``fid_n``: trial -> n_generated override.
    ``complete=False``: only running and failed trials. ``fid(schedule, loss, seed)``: the FID of a cell."""
    url = f"sqlite:///{db}"
    store = Store(url)
    store.ensure_schema()
    space = {"diffusion.schedule": SCHEDULES, "diffusion.loss": LOSSES, "train.seed": SEEDS}
    store.record_study(
        name,
        "studies/fixture.yaml",
        {"name": name, "train": {"steps": 20}},
        {"sampler": "grid", "space": space},
        [{"metric": "fid", "direction": "minimize"}],
    )
    study = optuna.create_study(study_name=name, storage=url, direction="minimize")
    dists = {
        "diffusion.schedule": optuna.distributions.CategoricalDistribution(SCHEDULE_LABELS),
        "diffusion.loss": optuna.distributions.CategoricalDistribution(LOSSES),
        "train.seed": optuna.distributions.CategoricalDistribution(SEEDS),
    }
    env = {"host": "box", "device": "cpu", "torch_version": "2.x", "git_revision": "abc123", "python": "3.11"}
    number = 0
    cells = [(s, lo, seed) for s in range(2) for lo in range(2) for seed in SEEDS]
    for s, lo, seed in cells if complete else []:
        params = {"diffusion.schedule": SCHEDULE_LABELS[s], "diffusion.loss": LOSSES[lo], "train.seed": seed}
        store.start_trial(name, number, params, {"resolved": True, **params}, env)
        value = fid(s, lo, seed)
        attrs = dict(FID_ATTRS, n_generated=(fid_n or {}).get(number, FID_ATTRS["n_generated"]))
        attrs.update(reference_cache="hit" if number else "miss", seed=number)  # differ harmlessly
        flops = 1e9 * (1 + s) * (1 + 0.5 * lo)
        store.add_metrics(
            name,
            number,
            [
                {"name": "fid", "value": value, "attrs": attrs},
                {"name": "kid", "value": value / 1000, "attrs": attrs},
                {"name": "swd", "value": value / 10},
                {"name": "swd_16", "value": value / 20 + 0.1 * s},
                {"name": "swd_32", "value": value / 15 - 0.1 * s},
                {"name": "flops_per_image", "value": flops, "unit": "flop", "attrs": {"convention": "fvcore"}},
                {"name": "params", "value": 1e6},
                {  # seed 2 was timed while other processes used the cores (harness.metrics.perf.LoadMeter)
                    "name": "train_images_per_s",
                    "value": 500.0 / (1 + s) + seed,
                    "unit": "images/s",
                    "attrs": {
                        "other_load_cores": 1.5 if seed == 2 else 0.0,
                        "torch_threads": 2,
                        "under_load": seed == 2,
                    },
                },
                {"name": "mfu", "value": 0.3 + 0.01 * seed},
                # the schedule's levels under a sampler uniform in t (issue 10's confound); the loss does not move it
                {"name": "sampler_fidelity", "value": [0.585, 0.328][s], "unit": "fraction"},
                {"name": "swd_baseline_data", "value": 1.0 + 0.01 * seed},
                {"name": "swd_baseline_noise", "value": 30.0},
                {"name": "swd_baseline_mean_image", "value": 12.0},
                *[
                    {"name": "train_loss", "value": 1.0 / (step + 1) + 0.01 * seed + 0.05 * s + 0.02 * lo, "step": step}
                    for step in range(0, 20, 5)
                ],
                *[
                    {
                        "name": "val_loss_by_logsnr",
                        "value": 0.5 + 0.1 * b - 0.05 * s,
                        "step": b,
                        "attrs": {"logsnr_low": -10 + 5 * b, "logsnr_high": -5 + 5 * b},
                    }
                    for b in range(4)
                ],
            ],
        )
        if tmp is not None:
            grid = tmp / f"grid_{name.__hash__() & 0xFFFF}_{number}.png"
            Image.fromarray(np.full((16, 16, 3), 40 * number % 255, dtype=np.uint8)).save(grid)
            store.add_artifact(name, number, "sample_grid", str(grid))
        store.finish_trial(name, number, "complete", duration_s=1.5 + number)
        study.add_trial(optuna.trial.create_trial(params=params, distributions=dists, value=value))
        number += 1
    extra = [
        ("failed", "Diverged: non-finite loss at step 7 <b>bold?</b>"),
        ("pruned", "pruned at step 10"),
        ("running", None),
    ]
    for state, error in extra if complete else [("running", None), ("failed", "CUDA out of memory")]:
        params = {"diffusion.schedule": "cosine", "diffusion.loss": "mse", "train.seed": 9}
        store.start_trial(name, number, params, {}, env)
        if state != "running":
            store.finish_trial(name, number, state, error=error, duration_s=0.5)
        number += 1
    return url


@pytest.fixture(scope="module")
def study_db(tmp_path_factory) -> tuple[str, Path]:
    tmp = tmp_path_factory.mktemp("report")
    url = make_study(tmp / "h.db", tmp=tmp)
    out = tmp / "out"
    assert report_main(["--study", "ablation", "--storage", url, "--out", str(out)]) == 0
    return url, out


def test_trials_csv_rows_and_columns(study_db):
    _, out = study_db
    with open(out / "trials.csv", newline="") as f:
        rows = list(csv.reader(f))
    header, body = rows[0], rows[1:]
    assert len(body) == 12 + 3
    metrics = ["fid", "flops_per_image", "kid", "mfu", "params", "sampler_fidelity", "swd", "swd_16", "swd_32"]
    metrics += ["swd_baseline_data", "swd_baseline_mean_image", "swd_baseline_noise", "train_images_per_s"]
    guard = ["fid_basis", "fid_comparable", "kid_basis", "kid_comparable"]
    assert header == [
        "number",
        "state",
        "diffusion.loss",
        "diffusion.schedule",
        "train.seed",
        *metrics,
        *guard,
        "duration_s",
        "error",
    ]
    states = [r[1] for r in body]
    assert states.count("complete") == 12 and {"failed", "pruned", "running"} <= set(states)


def expected_effects() -> dict[tuple[str, str], dict[str, float]]:
    """The effects by hand: numpy means/stds, scipy t quantiles, differences paired by (other factor, seed)."""
    fid = {(s, lo, seed): fid_value(s, lo, seed) for s in range(2) for lo in range(2) for seed in SEEDS}
    out = {}
    for factor, labels, axis in (("diffusion.schedule", SCHEDULE_LABELS, 0), ("diffusion.loss", LOSSES, 1)):
        for level in range(2):
            keys = sorted(k for k in fid if k[axis] == level)
            x = np.array([fid[k] for k in keys])
            half = stats.t.ppf(0.975, len(x) - 1) * x.std(ddof=1) / np.sqrt(len(x))
            row = {
                "n": len(x),
                "mean": x.mean(),
                "std": x.std(ddof=1),
                "ci_low": x.mean() - half,
                "ci_high": x.mean() + half,
            }
            if level == 1:
                base = np.array([fid[tuple(0 if i == axis else v for i, v in enumerate(k))] for k in keys])
                d = x - base
                dh = stats.t.ppf(0.975, len(d) - 1) * d.std(ddof=1) / np.sqrt(len(d))
                row.update(
                    diff=d.mean(),
                    diff_ci_low=d.mean() - dh,
                    diff_ci_high=d.mean() + dh,
                    p_value=stats.ttest_rel(x, base).pvalue,
                )
            out[(factor, labels[level])] = row
    return out


def test_effects_match_hand_computation(study_db):
    url, out = study_db
    table = pd.read_csv(out / "summary.csv")
    assert len(table) == 4 and set(table["objective"]) == {"fid"}
    for (factor, level), want in expected_effects().items():
        got = table[(table["factor"] == factor) & (table["level"] == level)].iloc[0]
        for key, value in want.items():
            assert got[key] == pytest.approx(value, rel=1e-9), (factor, level, key)
        assert got["test"] == ("base" if "diff" not in want else "paired t")
        assert got["base_level"] == ("cosine" if factor == "diffusion.schedule" else "mse")
    same = results.summary(url, "ablation")
    for column in ("warning", "verdict"):  # an empty string reads back from CSV as missing
        table[column] = table[column].astype(object).where(table[column].notna(), "")
    pd.testing.assert_frame_equal(same.reset_index(drop=True), table, check_dtype=False)


def test_welch_when_seeds_do_not_match():
    frame = pd.DataFrame(
        {
            "trial_number": range(7),
            "state": "complete",
            "f": list("aaabbbb"),
            "train.seed": [0, 1, 2, 0, 1, 3, 4],
            "y": [1.0, 2.5, 1.7, 3.0, 4.2, 2.9, 3.8],
        }
    )
    table = effects(frame, ["f"], ["y"], "train.seed", levels={"f": ["a", "b"]})
    row = table[table["level"] == "b"].iloc[0]
    a, b = np.array([1.0, 2.5, 1.7]), np.array([3.0, 4.2, 2.9, 3.8])
    va, vb = a.var(ddof=1) / 3, b.var(ddof=1) / 4
    df = (va + vb) ** 2 / (va**2 / 2 + vb**2 / 3)
    half = stats.t.ppf(0.975, df) * np.sqrt(va + vb)
    assert row["test"] == "Welch t" and row["n_pairs"] == 0
    assert row["diff"] == pytest.approx(b.mean() - a.mean())
    assert (row["diff_ci_low"], row["diff_ci_high"]) == pytest.approx(
        (b.mean() - a.mean() - half, b.mean() - a.mean() + half)
    )
    assert row["p_value"] == pytest.approx(stats.ttest_ind(b, a, equal_var=False).pvalue)


def test_pareto_mask():
    assert list(pareto_mask([1, 2, 3, 2], [5, 3, 4, 6], "minimize")) == [True, True, False, False]
    assert list(pareto_mask([1, 2], [5, 6], "maximize")) == [True, True]


def test_html_contents(study_db):
    _, out = study_db
    html = (out / "index.html").read_text()
    assert "studies/fixture.yaml" in html and "abc123" in html
    assert "paired t" in html and "effects-table" in html
    assert "Diverged: non-finite loss at step 7 &lt;b&gt;bold?&lt;/b&gt;" in html and "<b>bold?" not in html
    assert "pruned at step 10" in html
    assert "Not comparable" not in html
    # the sampler confound is flagged for the schedule (whose levels differ in fidelity), not for the loss
    confound = html.split('class="warning fidelity"')
    assert len(confound) == 3 and "levels of diffusion.schedule keep different fractions" in confound[1]
    assert "0.585" in confound[1] and "0.328" in confound[1] and "diffusion.loss" not in confound[1]
    assert "less than 0.85" in confound[2]
    assert 'id="fidelity-table"' in html and 'id="calibration-table"' in html
    calibration = html.split('id="calibration-table"')[1].split("</table>")[0]
    assert "data (floor)" in calibration and "noise (ceiling)" in calibration and "mean image (ceiling)" in calibration
    for png in [
        "effect_diffusion.schedule_fid.png",
        "pareto_fid.png",
        "throughput.png",
        "train_loss.png",
        "val_loss_by_logsnr.png",
        "swd_levels.png",
        "importances.png",
        "samples/trial_0.png",
    ]:
        assert (out / png).is_file() and f'src="{png}"' in html, png


def test_fidelity_warning_marks_the_confounded_factor_in_the_effects(study_db):
    url, _ = study_db
    effects = results.summary(url, "ablation")
    flagged = effects[effects["warning"].str.contains("sampler fidelity", na=False)]
    assert set(flagged["factor"]) == {"diffusion.schedule"}


def test_hostile_study_name_is_escaped(tmp_path):
    name = "<script>alert(1)</script>"
    url = make_study(tmp_path / "h.db", name)
    assert report_main(["--study", name, "--storage", url, "--out", str(tmp_path / "out")]) == 0
    html = (tmp_path / "out" / "index.html").read_text()
    assert "<script>alert(1)</script>" not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "<script" not in html.lower()


def test_no_completed_trial_renders_a_message(tmp_path):
    url = make_study(tmp_path / "h.db", "fresh", complete=False)
    assert report_main(["--study", "fresh", "--storage", url, "--out", str(tmp_path / "out")]) == 0
    html = (tmp_path / "out" / "index.html").read_text()
    assert 'id="no-complete"' in html and "No completed trial yet" in html and "CUDA out of memory" in html
    assert len(pd.read_csv(tmp_path / "out" / "trials.csv")) == 2
    assert len(pd.read_csv(tmp_path / "out" / "summary.csv")) == 0


def test_fid_with_different_n_is_flagged(tmp_path):
    url = make_study(tmp_path / "h.db", "mixed", fid_n={3: 1024})
    assert report_main(["--study", "mixed", "--storage", url, "--out", str(tmp_path / "out")]) == 0
    html = (tmp_path / "out" / "index.html").read_text()
    assert "Not comparable" in html and "n_generated=1024" in html and "n_generated=256" in html
    assert html.count('class="warning"') >= 1  # the plot of FID carries its own warning
    trials = pd.read_csv(tmp_path / "out" / "trials.csv")
    assert list(trials.loc[trials["number"] == 3, "fid_comparable"]) == [False]
    assert trials.loc[(trials["state"] == "complete") & (trials["number"] != 3), "fid_comparable"].all()
    summary = pd.read_csv(tmp_path / "out" / "summary.csv")
    flagged = summary[~summary["comparable"]]
    assert len(flagged) and flagged["warning"].str.contains("different bases").all()


def test_cli_errors_are_one_line(tmp_path, capsys):
    assert report_main(["--study", "x", "--storage", f"sqlite:///{tmp_path}/missing.db"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and not (tmp_path / "missing.db").exists()
    url = make_study(tmp_path / "h.db", "known", complete=False)
    assert report_main(["--study", "nope", "--storage", url]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "'nope'" in err and "known" in err and err.count("\n") == 1


def test_query_summary_prints_the_effects(study_db, capsys):
    url, _ = study_db
    assert query_main(["--storage", url, "--study", "ablation", "--summary", "--format", "json"]) == 0
    printed = pd.DataFrame(json.loads(capsys.readouterr().out))
    assert len(printed) == 4 and set(printed["test"]) == {"base", "paired t"}
    assert {"rel_diff", "resolved", "seeds_needed", "best_level", "verdict"} <= set(printed.columns)
    assert query_main(["--storage", url, "--study", "ablation", "--summary"]) == 0
    table = capsys.readouterr().out
    head = table.split("\n\n")[0].splitlines()  # the verdict sentences come first, as on the page
    assert head[0] == "Verdict (per factor and objective):" and len(head) == 3
    assert list(results.verdicts(url, "ablation")["headline"]) == [line.strip() for line in head[1:]]
    assert "paired t" in table.split("\n\n", 1)[1]  # then the effects table
    assert query_main(["--storage", url, "--summary"]) == 2
    assert "--summary" in capsys.readouterr().err


def test_module_entry_point_exits_2_with_one_line(study_db, tmp_path):
    url, _ = study_db
    cmd = [sys.executable, "-m", "harness.report", "--study", "no such study", "--storage", url, "--out", str(tmp_path)]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.startswith("error: --study: no study named 'no such study'") and proc.stderr.count("\n") == 1


def test_a_different_reference_set_is_a_different_basis():
    rows = [
        {"trial_number": n, "name": "fid", "value": 10.0, "step": None, "attrs_json": json.dumps(dict(FID_ATTRS, **a))}
        for n, a in enumerate([{}, {"reference_cache": "hit", "seed": 3}, {"reference_fingerprint": "other-set"}])
    ]
    bases = metric_bases(pd.DataFrame(rows))
    assert bases["basis"].nunique() == 2 and bases.loc[0, "basis"] == bases.loc[1, "basis"]
    frame, distinct = add_basis_columns(pd.DataFrame({"trial_number": [0, 1, 2]}), bases)
    assert list(frame["fid_comparable"]) == [True, True, False]
    (warning,) = comparability_warnings(distinct)
    assert "reference_fingerprint=shapes-16-v1 | reference_fingerprint=other-set" in warning
