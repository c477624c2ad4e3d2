"""The pieces of exactly-once bookkeeping, raced directly: claims, Optuna's queue on SQLite, and the
checkpoint folder that belongs to one database and study."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import optuna
import pytest

from harness import results
from harness.driver.open import open_rdb_storage
from harness.store import Store
from harness.store.claims import ClaimLost, claim_trial, complete_trial, grid_cell
from harness.store.concurrency import writer_engine
from harness.study import main

THREADS = 8


def race(work, n: int = THREADS) -> list:
    """Run ``work(i)`` in ``n`` threads released at the same instant; their results by index."""
    barrier, out = threading.Barrier(n), [None] * n

    def run(i: int) -> None:
        barrier.wait()
        out[i] = work(i)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    return out


def writer_store(url: str) -> Store:
    store = Store(url, engine=writer_engine(url))
    store.ensure_schema()
    return store


def test_of_many_workers_claiming_one_cell_exactly_one_gets_it(tmp_path: Path):
    url = f"sqlite:///{tmp_path / 'h.db'}"
    writer_store(url)
    cell = grid_cell({"train.seed": 0})
    stores = [writer_store(url) for _ in range(THREADS)]  # one engine (connection pool) per "worker"
    holders = race(lambda i: claim_trial(stores[i], "s", cell, i, {}, {}, {}, retired=()))
    winners = [i for i, h in enumerate(holders) if h is None]
    assert len(winners) == 1
    assert {h for h in holders if h is not None} == set(winners)
    assert list(stores[0].trials("s")["trial_number"]) == winners  # only the winner wrote a running row
    # the winner fails (retired): the next trial takes the cell over; the old holder cannot complete it
    assert claim_trial(stores[0], "s", cell, 100, {}, {}, {}, retired={winners[0]}) is None
    with pytest.raises(ClaimLost, match="taken for dead"):
        complete_trial(stores[0], "s", winners[0], cell, [{"name": "x", "value": 1.0}], [], 1.0)
    complete_trial(stores[0], "s", 100, cell, [{"name": "x", "value": 1.0}], [("sample_grid", "g.png")], 1.0)
    # a completed cell is never taken over, retired or not
    assert claim_trial(stores[0], "s", cell, 101, {}, {}, {}, retired={100}) == 100
    metrics = stores[0].metrics("s")
    assert list(zip(metrics["trial_number"], metrics["name"], strict=True)) == [(100, "x")]


@pytest.mark.filterwarnings("ignore:Heartbeat of storage")
def test_workers_popping_the_queue_on_sqlite_never_get_the_same_trial(tmp_path: Path):
    """Optuna's pop is a read then a write; on SQLite without row locks two workers both get the trial
    unless the read runs inside the write lock (BEGIN IMMEDIATE)."""
    url = f"sqlite:///{tmp_path / 'h.db'}"
    study = optuna.create_study(study_name="q", storage=open_rdb_storage(url, 60))
    for i in range(THREADS):
        study.enqueue_trial({"x": i})
    studies = [optuna.load_study(study_name="q", storage=open_rdb_storage(url, 60)) for _ in range(THREADS)]
    numbers = race(lambda i: studies[i].ask().number)
    assert sorted(numbers) == list(range(THREADS))


def test_a_new_database_beside_old_results_starts_fresh_and_leaves_old_checkpoints_alone(tmp_path: Path, monkeypatch):
    monkeypatch.setenv("HARNESS_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
    study = tmp_path / "one.yaml"
    study.write_text(
        "name: one\ndataset: {name: shapes, resolution: 16, num_images: 32}\n"
        "model: {name: uvit, preset: tiny, stem: {name: wavelet, levels: 1}}\n"
        "train: {steps: 2, batch_size: 4, warmup_steps: 1, log_every: 1, checkpoint_every: 1, device: cpu}\n"
        "eval: {num_samples: 4, batch_size: 4, grid_size: 4, sampler: {name: ddim, steps: 2}, metrics: []}\n"
        "search: {sampler: grid, space: {train.seed: [0]}}\nobjectives: [{metric: val_loss}]\n"
    )

    def run(db: str) -> Path:
        url = f"sqlite:///{tmp_path / db}"
        assert main([str(study), "--storage", url, "--quiet"]) == 0
        assert results.load(url, "one")["resumed_from_step"].tolist() == [0]  # trained, not resumed
        (path,) = sqlite3.connect(tmp_path / db).execute("SELECT path FROM harness_artifacts WHERE kind='checkpoint'")
        return Path(path[0])

    first = run("a.db")
    before = first.read_bytes()
    second = run("b.db")  # same folder, same study, same config: a fresh database all the same
    assert second != first and second.exists()
    assert first.read_bytes() == before  # the old database's checkpoint is untouched
    # <results>/one/<the study's id in its database>/config_<hash>/checkpoint/latest.pt
    assert first.parents[1].name == second.parents[1].name  # the same trial configuration
    assert first.parents[2] != second.parents[2] and first.parents[3] == second.parents[3]


@pytest.mark.parametrize("value", ["0", "-5", "soon"])
def test_a_bad_heartbeat_interval_is_refused_before_the_database_is_touched(tmp_path: Path, monkeypatch, capsys, value):
    monkeypatch.setenv("HARNESS_HEARTBEAT_S", value)
    study = tmp_path / "s.yaml"
    study.write_text("name: s\nsearch: {sampler: grid, space: {train.seed: [0]}}\nobjectives: [{metric: val_loss}]\n")
    assert main([str(study), "--storage", f"sqlite:///{tmp_path / 'h.db'}"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: HARNESS_HEARTBEAT_S:") and err.count("\n") == 1
    assert not (tmp_path / "h.db").exists()
