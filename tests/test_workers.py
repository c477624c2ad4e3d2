"""``python -m harness.study FILE --workers N|auto``: N worker processes on one SQLite study, one display, one exit
status; Ctrl-C stops every worker cleanly and the rerun resumes, every cell complete once."""

from __future__ import annotations

import io
import json
import os
import signal
import sys
import threading
import time
from pathlib import Path

import optuna
import pytest

from harness.cli import workers
from harness.config import load_study
from harness.store import Store
from harness.study import main

ROOT = Path(__file__).resolve().parent.parent

STUDY = """
name: {name}
seed: 0
dataset: {{name: shapes, resolution: 16, num_images: 48}}
model: {{name: uvit, preset: tiny, stem: {{name: wavelet, levels: 1}}}}
diffusion: {{schedule: {{name: cosine}}, loss: mse}}
train: {{steps: {steps}, batch_size: 4, warmup_steps: 2, log_every: 10, checkpoint_every: 5, device: {device}}}
eval: {{num_samples: 4, batch_size: 4, grid_size: 4, sampler: {{name: ddim, steps: 2}}, metrics: [flops]}}
search: {{sampler: grid, space: {{train.seed: {seeds}}}}}
objectives: [{{metric: val_loss, direction: minimize}}]
"""


def write_study(folder: Path, name: str = "w", steps: int = 100, seeds=(0, 1), device: str = "cpu") -> Path:
    path = folder / f"{name}.yaml"
    path.write_text(STUDY.format(name=name, steps=steps, seeds=list(seeds), device=device))
    return path


def interrupt_when_both_checkpointed(folder: Path) -> threading.Thread:
    """Press Ctrl-C (SIGINT to this process, where the supervisor runs) once two trials wrote a checkpoint."""

    def press() -> None:
        while len(list(folder.rglob("latest.pt"))) < 2:
            time.sleep(0.05)
        os.kill(os.getpid(), signal.SIGINT)

    thread = threading.Thread(target=press, daemon=True)
    thread.start()
    return thread


def test_ctrl_c_stops_every_worker_cleanly_and_the_rerun_resumes_each_cell_once(tmp_path: Path, monkeypatch, capsys):
    study = write_study(tmp_path)
    url = f"sqlite:///{tmp_path / 'h.db'}"
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HARNESS_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("HARNESS_FAULT", raising=False)
    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    command = [str(study), "--storage", url, "--quiet", "--workers", "2"]
    presser = interrupt_when_both_checkpointed(tmp_path)
    assert main(command) == 130  # the supervisor runs here; its workers are processes of their own
    presser.join()
    out = capsys.readouterr().out
    assert out.splitlines()[-1] == "interrupted: completed trials are kept; run the same command again to resume"
    for worker in ("[w0]", "[w1]"):  # each worker recorded its trial as interrupted and said so, prefixed
        assert f"{worker} interrupted: completed trials are kept" in out, out
    assert "Traceback" not in out
    rows = Store(url).trials("w")
    assert sorted(rows["state"]) == ["failed", "failed"], rows
    assert all(e.startswith("interrupted (Ctrl-C)") for e in rows["error"])
    assert not [t for t in optuna.load_study(study_name="w", storage=url).trials if t.state.name == "RUNNING"]
    # the rerun: both cells resume from their checkpoints, each complete exactly once
    assert main(command) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[-1] == "workers: all 2 finished"
    store = Store(url)
    rows = store.trials("w")
    complete = rows[rows["state"] == "complete"]
    assert sorted(json.loads(p)["train.seed"] for p in complete["params_json"]) == [0, 1]
    assert sorted(store.claims("w")["trial_number"]) == sorted(complete["trial_number"])
    metrics = store.metrics("w")
    resumed = metrics[metrics["name"] == "resumed_from_step"]["value"]
    assert len(resumed) == 2 and all(v >= 5 for v in resumed)
    # each worker ran with its share of the cores (usable cores // 2 torch threads, unless OMP_NUM_THREADS is set)
    threads = {json.loads(e)["torch_threads"] for e in complete["env_json"]}
    assert threads == {workers.given_threads() or max(1, workers.usable_cores() // 2)}
    envs = [json.loads(e) for e in complete["env_json"]]
    assert len({e["pid"] for e in envs}) == 2 and {e["worker"] for e in envs} == {"0", "1"}  # both did work
    if not any(os.environ.get(k) for k in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")):  # each set its wait policy
        assert {(e["gomp_spincount"], e["wait_policy_by"]) for e in envs} == {("10000", "harness")}


def test_one_exit_status_names_the_workers_that_died_and_waits_for_the_others(tmp_path: Path):
    """A worker killed by a signal or failing makes the status non-zero (the first failing code; 1 for a signal),
    and each is named; the others run to their end."""
    script = (
        "import os, signal, sys, time; w = int(os.environ['HARNESS_WORKER']); print(f'worker {w} threads', "
        "os.environ['OMP_NUM_THREADS'], flush=True); time.sleep(0.2 * w)\n"
        "if w == 1: os.kill(os.getpid(), signal.SIGKILL)\nsys.exit(3 if w == 2 else 0)"
    )
    loaded = load_study(write_study(tmp_path, seeds=(0, 1, 2)))
    plans = workers.plan_workers("3", loaded, None)
    out = io.StringIO()
    assert workers.run_workers(plans, [sys.executable, "-c", script], workers.Display(out)) == 3
    lines = out.getvalue().splitlines()
    threads = workers.given_threads() or max(1, workers.usable_cores() // 3)
    assert {f"[w{i}] worker {i} threads {threads}" for i in range(3)} <= set(lines)
    assert "workers: [w1] ended with killed by SIGKILL" in lines and "workers: [w2] ended with exit code 3" in lines
    assert not any(line.startswith("workers: [w0]") for line in lines)
    plans = plans[:2]
    assert workers.run_workers(plans, [sys.executable, "-c", script], workers.Display(io.StringIO())) == 1


def test_each_worker_runs_the_command_line_without_the_workers_flag():
    argv = ["s.yaml", "--workers", "2", "--set", "train.steps=3", "--workers=auto", "--quiet"]
    assert workers.worker_command(argv) == [
        sys.executable,
        "-m",
        "harness.study",
        "s.yaml",
        "--set",
        "train.steps=3",
        "--quiet",
    ]


def test_plans_pin_one_device_per_worker_and_share_the_cores(tmp_path: Path, monkeypatch):
    loaded = load_study(write_study(tmp_path, seeds=(0, 1, 2)))
    monkeypatch.setattr(workers, "usable_cores", lambda: 8)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    cpu = workers.plan_workers("auto", loaded, None)  # one per core, never more than the 3 planned trials
    assert [p.env["OMP_NUM_THREADS"] for p in cpu] == ["2", "2", "2"]
    assert [p.env["HARNESS_WORKER"] for p in cpu] == ["0", "1", "2"]
    assert all("CUDA_VISIBLE_DEVICES" not in p.env for p in cpu)
    assert [p.env["OMP_NUM_THREADS"] for p in workers.plan_workers("16", loaded, None)] == ["1"] * 16
    # on CUDA: one worker per visible GPU, round robin when more are asked for
    monkeypatch.setattr(workers, "pick_device", lambda choice: workers.torch.device("cuda"))
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,GPU-5a")
    gpu = workers.plan_workers("auto", loaded, None)
    assert [p.env["CUDA_VISIBLE_DEVICES"] for p in gpu] == ["3", "GPU-5a"]
    assert [p.env["OMP_NUM_THREADS"] for p in gpu] == ["4", "4"]
    assert [p.env["CUDA_VISIBLE_DEVICES"] for p in workers.plan_workers("3", loaded, None)] == ["3", "GPU-5a", "3"]
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # the user's choice is kept
    assert [p.env["OMP_NUM_THREADS"] for p in workers.plan_workers("auto", loaded, None)] == ["1", "1"]


@pytest.mark.parametrize("value", ["0", "-1", "two", "1.5", "2000"])
def test_bad_workers_values_are_one_line_and_change_nothing(tmp_path: Path, monkeypatch, capsys, value: str):
    study = write_study(tmp_path)
    monkeypatch.chdir(tmp_path)
    assert main([str(study), "--storage", f"sqlite:///{tmp_path / 'never.db'}", "--workers", value]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: {study}: --workers: ") and "\n" not in err
    assert not (tmp_path / "never.db").exists()


def test_the_display_prefixes_whole_lines_drops_bar_redraws_and_shows_a_note_once():
    out = io.StringIO()
    display = workers.Display(out)
    display.pump("[w0] ", io.BufferedReader(io.BytesIO(b"trial 0: a\ntrain 1/3\rtrain 2/3\rtrain 3/3\rnote: x\nend")))
    display.pump("[w1] ", io.BufferedReader(io.BytesIO(b"note: x\ntrial 1: b\n")))
    assert out.getvalue().splitlines() == ["[w0] trial 0: a", "[w0] note: x", "[w0] end", "[w1] trial 1: b"]
