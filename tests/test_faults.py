"""Fault injection: workers killed (SIGKILL) at every dangerous point of the trial bookkeeping, four workers
at once on a fresh SQLite database, two on PostgreSQL; what is kept must be whole, once, and the same.

The kills come from ``harness.faults`` (``HARNESS_FAULT``): a worker sends itself SIGKILL at a named point,
which is what ``kill -9`` at that instant does. After the kills and a rerun, every grid cell must be
complete exactly once in Optuna and in the harness tables, no trial may be left running, no metric row
doubled, and every metric but the machine's measurements equal bit for bit to an uninterrupted run.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import optuna
import pytest
import torch

from harness.config import load_study
from harness.driver.recovery import GRACE_FACTOR
from harness.report.reproducibility import comparable_metrics, differences
from harness.store import Store
from harness.study import main
from harness.trial.runner import run_trial

ROOT = Path(__file__).resolve().parent.parent
HEARTBEAT_S = 2  # seconds between heartbeats: a trial without one for GRACE_FACTOR of them is stale
SEEDS, LOSSES = [0, 1, 2, 3], ["mse", "v_mse"]
CELLS = [{"train.seed": s, "diffusion.loss": loss} for s in SEEDS for loss in LOSSES]
LAST_CELL = "diffusion.loss=v_mse,train.seed=3"  # harness.faults.cell_text of the grid's last cell

# 8 cells; log_every does not divide checkpoint_every, so a resume must restore a half-summed loss point
STUDY = """
name: {name}
seed: 0
dataset: {{name: shapes, resolution: 16, num_images: 48}}
model: {{name: uvit, preset: tiny, stem: {{name: wavelet, levels: 1}}, dropout: {{rate: 0.1}}}}
diffusion: {{schedule: {{name: cosine}}, loss: mse}}
train: {{steps: 6, batch_size: 4, warmup_steps: 2, log_every: 3, checkpoint_every: 2, device: cpu}}
eval: {{num_samples: 8, batch_size: 8, grid_size: 4, sampler: {{name: ddim, steps: 2}},
       metrics: [swd, flops, throughput, memory, mfu]}}
search: {{sampler: grid, space: {{train.seed: {seeds}, diffusion.loss: {losses}}}}}
objectives: [{{metric: val_loss, direction: minimize}}]
"""


def write_study(folder: Path, name: str) -> Path:
    path = folder / f"{name}.yaml"
    path.write_text(STUDY.format(name=name, seeds=SEEDS, losses=LOSSES))
    return path


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Workers and this process compute with one thread each: the same numbers (bit-identity holds for
    one machine and thread count), and four workers on two cores do not fight over them."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="module")
def reference(tmp_path_factory, cache: Path):
    """The uninterrupted run, in this process: per cell, the metrics every other run must repeat."""
    folder = tmp_path_factory.mktemp("reference")
    url = f"sqlite:///{folder / 'ref.db'}"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HARNESS_CACHE_DIR", str(cache))
        mp.chdir(folder)
        assert main([str(write_study(folder, "faults")), "--storage", url, "--quiet"]) == 0
    metrics = comparable_metrics(Store(url), "faults")
    assert len(metrics) == len(CELLS) and all(len(v) > 10 for v in metrics.values())
    return metrics


def worker_env(cache: Path, fault: str | None) -> dict[str, str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HARNESS_CACHE_DIR": str(cache), "OMP_NUM_THREADS": "1"}
    env["HARNESS_HEARTBEAT_S"] = str(HEARTBEAT_S)
    env.pop("HARNESS_FAULT", None)
    if fault:
        env["HARNESS_FAULT"] = fault
    return env


def run_workers(study: Path, url: str, cache: Path, faults: list[str | None]) -> list[tuple[int, str, str]]:
    """Start one worker per entry of ``faults`` at once; (exit code, stdout, stderr) of each."""
    cmd = [sys.executable, "-m", "harness.study", str(study), "--storage", url, "--quiet"]
    procs = [
        subprocess.Popen(
            cmd, cwd=study.parent, env=worker_env(cache, f), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        for f in faults
    ]
    outs = [p.communicate(timeout=600) for p in procs]
    return [(p.returncode, out, err) for p, (out, err) in zip(procs, outs, strict=True)]


def assert_killed_at(result: tuple[int, str, str], point: str) -> None:
    code, out, err = result
    assert code == -9 and f"fault: {point}" in err, (code, out, err)
    assert "Traceback" not in err, err


def rerun_in_process(study: Path, url: str, cache: Path, capsys) -> str:
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HARNESS_CACHE_DIR", str(cache))
        mp.setenv("HARNESS_HEARTBEAT_S", str(HEARTBEAT_S))
        mp.delenv("HARNESS_FAULT", raising=False)
        mp.chdir(study.parent)
        capsys.readouterr()
        assert main([str(study), "--storage", url, "--quiet"]) == 0
        return capsys.readouterr().out


def assert_every_cell_complete_once(url: str, name: str, reference) -> dict[str, int]:
    """Optuna and the harness tables agree: each cell complete exactly once, by the same trial; nothing
    running; no metric rows doubled or left by trials that did not complete; metrics as the reference."""
    trials = optuna.load_study(study_name=name, storage=url).trials
    assert not [t.number for t in trials if t.state.name == "RUNNING"]
    complete = {json.dumps(t.params, sort_keys=True): t.number for t in trials if t.state.name == "COMPLETE"}
    done = [t for t in trials if t.state.name == "COMPLETE"]
    assert len(done) == len(CELLS) and len(complete) == len(CELLS)
    store = Store(url)
    rows = store.trials(name)
    assert "running" not in set(rows["state"])
    ours = rows[rows["state"] == "complete"]
    assert dict(zip(ours["params_json"], ours["trial_number"], strict=True)) == complete
    claims = store.claims(name)
    assert sorted(claims["trial_number"]) == sorted(complete.values())
    metrics = store.metrics(name)
    assert set(metrics["trial_number"]) == set(complete.values())  # killed writes left nothing
    keys = metrics[["trial_number", "name", "step"]].astype(str)
    assert not keys.duplicated().any()
    assert differences(comparable_metrics(store, name), reference) == []  # raises on doubled rows too
    resumed = metrics[metrics["name"] == "resumed_from_step"]
    failed = rows[rows["state"] == "failed"]
    assert all(error.startswith("interrupted") for error in failed["error"]), list(failed["error"])
    return {
        "optuna_failed": len([t for t in trials if t.state.name == "FAIL"]),
        "harness_failed": len(failed),
        "resumed": sorted(int(v) for v in resumed["value"] if v),
    }


def test_killed_workers_on_sqlite_leave_every_cell_complete_once_with_identical_metrics(
    tmp_path: Path, cache: Path, reference, capsys
):
    study = write_study(tmp_path, "faults")
    url = f"sqlite:///{tmp_path / 'h.db'}"
    # wave 1: four workers start together on a fresh database; each dies at a different point
    points = ["before_claim", "after_claim", "checkpoint_write:step=4", "metrics_write"]
    wave = run_workers(study, url, cache, points)
    for result, point in zip(wave, points, strict=True):
        assert_killed_at(result, point.split(":")[0])
    died = time.time()
    # wave 2: two workers; whoever runs the last cell dies after the harness's commit, before Optuna's
    wave = run_workers(study, url, cache, [f"before_tell:cell={LAST_CELL}"] * 2)
    killed = [r for r in wave if r[0] != 0]
    assert len(killed) == 1, wave
    assert_killed_at(killed[0], "before_tell")
    assert all("Traceback" not in err for _, _, err in wave), wave
    # the trial killed before its claim has no owner: it is stale once the grace period has passed
    time.sleep(max(0.0, GRACE_FACTOR * HEARTBEAT_S + 0.5 - (time.time() - died)))
    rerun_in_process(study, url, cache, capsys)
    assert "nothing to run" in rerun_in_process(study, url, cache, capsys)
    figures = assert_every_cell_complete_once(url, "faults", reference)
    # resumed: the checkpoint kill from step 2 (its step-4 file never replaced step 2), the metric-write
    # kill from its final step-6 checkpoint; both still give the reference's numbers bit for bit
    assert figures["resumed"] == [2, 6]
    # the five kills: four trials failed and run again (the one killed before its claim has no harness
    # row), the one killed before Optuna heard of it completed from the harness tables
    assert (figures["optuna_failed"], figures["harness_failed"]) == (4, 3)


PG_URL = os.environ.get("HARNESS_TEST_POSTGRES_URL")


@pytest.mark.postgres
def test_killed_workers_on_postgresql_leave_every_cell_complete_once(tmp_path: Path, cache: Path, reference, capsys):
    if not PG_URL:
        if os.environ.get("CI"):
            pytest.fail("HARNESS_TEST_POSTGRES_URL is not set in CI: .ci/run should have started PostgreSQL")
        pytest.skip("no PostgreSQL server (set HARNESS_TEST_POSTGRES_URL)")
    name = f"faults_{uuid.uuid4().hex[:8]}"
    study = write_study(tmp_path, name)
    # two workers start together; one dies after its claim, the other while writing its metric rows
    points = ["after_claim", "metrics_write"]
    for result, point in zip(run_workers(study, PG_URL, cache, points), points, strict=True):
        assert_killed_at(result, point)
    rerun_in_process(study, PG_URL, cache, capsys)
    assert "nothing to run" in rerun_in_process(study, PG_URL, cache, capsys)
    figures = assert_every_cell_complete_once(PG_URL, name, reference)
    assert figures == {"optuna_failed": 2, "harness_failed": 2, "resumed": [6]}  # metric kill: training done


def test_the_same_seed_gives_the_same_trial_whatever_ran_before(tmp_path: Path, cache: Path, reference):
    """The network's initial weights come from the trial's seed, not from what the process did before:
    a trial run after other random draws repeats the reference run's numbers."""
    cell = {"diffusion.loss": "mse", "train.seed": 1}
    expected = reference[json.dumps(cell, sort_keys=True)]
    config = load_study(str(write_study(tmp_path, "faults")), []).trial_config(cell)
    for noise in (0, 1):
        torch.manual_seed(noise)  # another history of the global random state
        torch.rand(100)
        result = run_trial(config, tmp_path / f"run{noise}", cache)
        got = {(m["name"], m.get("step")): m["value"] for m in result.metrics}
        for key in [("train_loss", 3), ("train_loss", 6), ("val_loss", None), ("swd", None), ("params", None)]:
            assert got[key] == expected[key], key
