"""Exactly-once trial bookkeeping in the harness tables: claim a grid cell, write the results atomically.

Optuna hands a trial to a worker; on SQLite two workers can even get the same one, and with several
workers a grid cell can be queued twice. So a trial first *claims* its cell (``harness_claims``, one row
per study and cell) in the same transaction that writes its ``running`` row; a trial that finds the cell
held by a trial that completed it, or may still be running, runs nothing. At the end the metric rows,
the artifacts and the state ``complete`` are written in one transaction, and only while the trial still
holds its claim and its row is still ``running``. A worker killed at any instant leaves either a whole
trial or none of it, and no cell is ever complete twice.

Cells: a grid cell is its searched values; a tpe/random trial is a cell of its own (its number).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Collection, Iterable
from typing import Any

from sqlalchemy import delete, insert, select, update
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError

from harness import faults
from harness.store.tables import Store, artifacts_table, claims_table, metrics_table, trials_table, utc_now


class ClaimLost(RuntimeError):
    """A trial may not be written complete: another trial holds its cell, or it was failed meanwhile."""


def grid_cell(labels: dict[str, Any]) -> str:
    """The cell of a grid trial: its searched values as canonical JSON."""
    return json.dumps(labels, sort_keys=True, default=str)


def own_cell(number: int) -> str:
    """The cell of a tpe/random trial: the trial itself."""
    return json.dumps({"trial": number})


def cell_key(cell: str) -> str:
    return hashlib.sha256(cell.encode()).hexdigest()


def claim_trial(
    store: Store,
    study: str,
    cell: str,
    number: int,
    params: dict,
    config: dict,
    env: dict[str, Any],
    retired: Collection[int],
) -> int | None:
    """Take ``cell`` for trial ``number`` and write the trial's ``running`` row, in one transaction.
    Returns None when taken, else the number of the trial that keeps the cell. ``retired``: trials that
    Optuna finished without completing (failed, pruned); a claim of theirs passes on unless their row
    says complete. Of several workers racing for one cell exactly one gets it."""
    key = cell_key(cell)
    for _ in range(2):  # two first claims at once: one insert fails on the primary key; look again
        try:
            with store.engine.begin() as conn:
                holder = _take(conn, study, key, cell, number, retired)
                if holder is None:
                    store.write_running_row(conn, study, number, params, config, env)
                return holder
        except IntegrityError:
            continue
    raise ClaimLost(f"trial {number}: could not claim its cell (other workers kept claiming it)")


def _take(conn: Connection, study: str, key: str, cell: str, number: int, retired: Collection[int]) -> int | None:
    """Inside the claim's transaction: insert the claim, or pass it on from a retired holder."""
    where = (claims_table.c.study_name == study, claims_table.c.cell_key == key)
    row = conn.execute(select(claims_table.c.trial_number).where(*where).with_for_update()).first()
    if row is None:
        values = {"study_name": study, "cell_key": key, "cell_json": cell, "trial_number": number}
        conn.execute(insert(claims_table).values(claimed_at=utc_now(), **values))
        return None
    holder = row.trial_number
    if holder == number:
        return None
    state = conn.execute(
        select(trials_table.c.state).where(trials_table.c.study_name == study, trials_table.c.trial_number == holder)
    ).scalar()
    if state == "complete" or holder not in retired:
        return holder
    moved = conn.execute(
        update(claims_table)
        .where(*where, claims_table.c.trial_number == holder)
        .values(trial_number=number, claimed_at=utc_now())
    ).rowcount
    return None if moved == 1 else holder


def complete_trial(
    store: Store,
    study: str,
    number: int,
    cell: str,
    values: Iterable[dict[str, Any]],
    artifacts: Iterable[tuple[str, str]],
    duration_s: float | None,
) -> None:
    """Write the trial's metric rows and artifacts and mark it ``complete``, in one transaction: a crash
    leaves all of it or none, and a retried write replaces rather than doubles. Raises ``ClaimLost``
    (writing nothing) when the trial no longer holds its cell or its row is no longer ``running``
    (another worker took it for dead)."""
    with store.engine.begin() as conn:
        holder = conn.execute(
            select(claims_table.c.trial_number)
            .where(claims_table.c.study_name == study, claims_table.c.cell_key == cell_key(cell))
            .with_for_update()
        ).scalar()
        this = (trials_table.c.study_name == study, trials_table.c.trial_number == number)
        state = conn.execute(select(trials_table.c.state).where(*this)).scalar()
        if holder != number or state != "running":
            why = f"trial {holder} holds its cell" if holder != number else f"its row is {state!r}"
            raise ClaimLost(f"trial {number} was taken for dead while it ran ({why}); its results are not kept")
        for table in (metrics_table, artifacts_table):
            conn.execute(delete(table).where(table.c.study_name == study, table.c.trial_number == number))
        rows = Store.metric_rows(study, number, values)
        if rows:
            conn.execute(insert(metrics_table), rows)
        cell_labels = json.loads(cell)
        faults.point("metrics_write", trial=number, cell=faults.cell_text(cell_labels))
        files = [{"study_name": study, "trial_number": number, "kind": k, "path": p} for k, p in artifacts]
        if files:
            conn.execute(insert(artifacts_table), files)
        done = {"state": "complete", "error": None, "finished_at": utc_now(), "duration_s": duration_s}
        conn.execute(update(trials_table).where(*this).values(**done))


def record_unclaimed_failure(
    store: Store,
    study: str,
    number: int,
    params: dict,
    config: dict,
    env: dict[str, Any],
    reason: str,
    duration_s: float | None,
) -> None:
    """A trial that failed before it held its cell (building its config, claiming): its row, ``failed`` with the
    reason, in one transaction, so that the tables and the report list it. A row it already has (it claimed
    after all) is ended as ``finish_trial`` would; a row that is no longer ``running`` is left as it is."""
    this = (trials_table.c.study_name == study, trials_table.c.trial_number == number)
    with store.engine.begin() as conn:
        if conn.execute(select(trials_table.c.state).where(*this)).first() is None:
            store.write_running_row(conn, study, number, params, config, env)
        ended = {"state": "failed", "error": reason, "finished_at": utc_now(), "duration_s": duration_s}
        conn.execute(update(trials_table).where(*this, trials_table.c.state == "running").values(**ended))
