"""The harness's tables (``harness_`` prefix) beside Optuna's in the same SQL database.

Rows are keyed by (study name, trial number), never by Optuna's internal ids, so that a database can be
read by scripts that know nothing of Optuna. Schema (version ``SCHEMA_VERSION``):

- ``harness_schema``: one row, the schema version.
- ``harness_studies``: study name, study file path, resolved spec (JSON), search space, objectives,
  creation time.
- ``harness_trials``: one row per trial: params (the searched values, JSON), resolved config (JSON),
  state (running | complete | failed | pruned), error text, timings, environment (host, device, versions,
  git revision).
- ``harness_metrics``: one row per metric value: name, value (NULL = unavailable), step (training step for
  curves, bucket index for per-bucket values, else NULL), unit, attrs (JSON: what a reader needs to
  compare the value, e.g. FID's sample counts and reference set).
- ``harness_artifacts``: files a trial produced (sample grids, checkpoints) by path.
- ``harness_claims``: one row per (study, grid cell): the trial that holds the cell. A trial runs only
  after it took the claim, in the transaction that writes its ``running`` row; it is written ``complete``
  only while it still holds it. So each cell is complete at most once, however many workers race.
- ``harness_study_ids``: a random identity per study of this database; checkpoints live in a folder named
  by it, so a new database beside an old ``results/`` folder never resumes (or overwrites) another
  database's checkpoints.

Added tables leave the schema version alone: an older database gains them on its next run.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import (
    Column,
    DateTime,
    Float,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    create_engine,
    delete,
    func,
    insert,
    inspect,
    select,
    update,
)
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError

if TYPE_CHECKING:
    import pandas as pd

from harness.store.concurrency import retry_creation_race

SCHEMA_VERSION = 1

metadata = MetaData()

schema_table = Table(
    "harness_schema",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),  # always 1: one row
    Column("version", Integer, nullable=False),
)

studies_table = Table(
    "harness_studies",
    metadata,
    Column("study_name", String(512), primary_key=True),
    Column("study_file", Text),
    Column("spec_json", Text, nullable=False),
    Column("search_json", Text, nullable=False),
    Column("objectives_json", Text, nullable=False),
    Column("created_at", DateTime(timezone=True)),
)

trials_table = Table(
    "harness_trials",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("study_name", String(512), nullable=False, index=True),
    Column("trial_number", Integer, nullable=False),
    Column("state", String(16), nullable=False),
    Column("params_json", Text, nullable=False),
    Column("config_json", Text, nullable=False),
    Column("error", Text),
    Column("started_at", DateTime(timezone=True)),
    Column("finished_at", DateTime(timezone=True)),
    Column("duration_s", Float),
    Column("host", String(256)),
    Column("device", String(256)),
    Column("torch_version", String(64)),
    Column("cuda_version", String(64)),
    Column("git_revision", String(64)),
    Column("env_json", Text),
    UniqueConstraint("study_name", "trial_number", name="uq_harness_trial"),
)

metrics_table = Table(
    "harness_metrics",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("study_name", String(512), nullable=False, index=True),
    Column("trial_number", Integer, nullable=False),
    Column("name", String(128), nullable=False),
    Column("value", Float),
    Column("step", Integer),
    Column("unit", String(32)),
    Column("attrs_json", Text),
)

artifacts_table = Table(
    "harness_artifacts",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("study_name", String(512), nullable=False, index=True),
    Column("trial_number", Integer, nullable=False),
    Column("kind", String(64), nullable=False),
    Column("path", Text, nullable=False),
)


claims_table = Table(
    "harness_claims",
    metadata,
    Column("study_name", String(512), primary_key=True),
    Column("cell_key", String(64), primary_key=True),  # sha256 of cell_json
    Column("cell_json", Text, nullable=False),  # the searched values (grid) or the trial number (tpe/random)
    Column("trial_number", Integer, nullable=False),  # the trial that holds the cell
    Column("claimed_at", DateTime(timezone=True)),
)

study_ids_table = Table(
    "harness_study_ids",
    metadata,
    Column("study_name", String(512), primary_key=True),
    Column("uid", String(32), nullable=False),
    Column("created_at", DateTime(timezone=True)),
)


class SchemaMismatch(RuntimeError):
    pass


def utc_now() -> datetime:
    return datetime.now(UTC)


def _finite_or_none(value: float | None) -> float | None:
    if value is None:
        return None
    value = float(value)
    return value if value == value and abs(value) != float("inf") else None


class Store:
    """Read and write the harness tables of one database (SQLAlchemy URL)."""

    def __init__(self, url: str, engine: Engine | None = None):
        self.url = url
        self.engine = engine or create_engine(url, future=True)

    # -- schema -------------------------------------------------------------------------------------
    def ensure_schema(self) -> None:
        """Create the tables when missing; refuse a database written by another schema version. Safe when
        several workers start at once (a lost creation race is retried)."""

        def create() -> None:
            metadata.create_all(self.engine)
            with self.engine.begin() as conn:
                if conn.execute(select(schema_table.c.version)).first() is None:
                    conn.execute(insert(schema_table).values(id=1, version=SCHEMA_VERSION))

        retry_creation_race(create)
        with self.engine.connect() as conn:
            version = conn.execute(select(schema_table.c.version)).scalar()
            if version != SCHEMA_VERSION:
                raise SchemaMismatch(f"harness schema version {version} in {self.url}, expected {SCHEMA_VERSION}")

    def has_schema(self) -> bool:
        return inspect(self.engine).has_table("harness_trials")

    # -- writes -------------------------------------------------------------------------------------
    def record_study(self, name: str, study_file: str | None, spec: dict, search: dict, objectives: list) -> None:
        row = {
            "study_file": study_file,
            "spec_json": json.dumps(spec, sort_keys=True),
            "search_json": json.dumps(search, sort_keys=True),
            "objectives_json": json.dumps(objectives),
        }
        try:
            with self.engine.begin() as conn:
                conn.execute(insert(studies_table).values(study_name=name, created_at=utc_now(), **row))
        except IntegrityError:  # the study exists (perhaps another worker just wrote it): update it
            with self.engine.begin() as conn:
                conn.execute(update(studies_table).where(studies_table.c.study_name == name).values(**row))

    def start_trial(self, study: str, number: int, params: dict, config: dict, env: dict[str, Any]) -> None:
        """A trial row in state ``running``; a rerun of the same number (a retry) replaces the old rows."""
        with self.engine.begin() as conn:
            self.write_running_row(conn, study, number, params, config, env)

    @staticmethod
    def write_running_row(conn, study: str, number: int, params: dict, config: dict, env: dict[str, Any]) -> None:
        for table in (trials_table, metrics_table, artifacts_table):
            conn.execute(delete(table).where(table.c.study_name == study, table.c.trial_number == number))
        conn.execute(
            insert(trials_table).values(
                study_name=study,
                trial_number=number,
                state="running",
                params_json=json.dumps(params, sort_keys=True),
                config_json=json.dumps(config, sort_keys=True),
                started_at=utc_now(),
                host=env.get("host"),
                device=env.get("device"),
                torch_version=env.get("torch_version"),
                cuda_version=env.get("cuda_version"),
                git_revision=env.get("git_revision"),
                env_json=json.dumps(env, sort_keys=True),
            )
        )

    def finish_trial(
        self, study: str, number: int, state: str, error: str | None = None, duration_s: float | None = None
    ) -> None:
        """End a ``running`` row (a row already ended, e.g. complete, is left as it is)."""
        with self.engine.begin() as conn:
            conn.execute(
                update(trials_table)
                .where(
                    trials_table.c.study_name == study,
                    trials_table.c.trial_number == number,
                    trials_table.c.state == "running",
                )
                .values(state=state, error=error, finished_at=utc_now(), duration_s=duration_s)
            )

    def add_metrics(self, study: str, number: int, values: Iterable[dict[str, Any]]) -> None:
        """Each value: name, value (None = unavailable), optional step, unit, attrs."""
        rows = self.metric_rows(study, number, values)
        if rows:
            with self.engine.begin() as conn:
                conn.execute(insert(metrics_table), rows)

    @staticmethod
    def metric_rows(study: str, number: int, values: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
        return [
            {
                "study_name": study,
                "trial_number": number,
                "name": v["name"],
                "value": _finite_or_none(v.get("value")),
                "step": v.get("step"),
                "unit": v.get("unit"),
                "attrs_json": json.dumps(v.get("attrs") or {}, sort_keys=True, default=str),
            }
            for v in values
        ]

    def add_artifact(self, study: str, number: int, kind: str, path: str) -> None:
        with self.engine.begin() as conn:
            conn.execute(insert(artifacts_table).values(study_name=study, trial_number=number, kind=kind, path=path))

    def delete_trial(self, study: str, number: int) -> None:
        with self.engine.begin() as conn:
            for table in (trials_table, metrics_table, artifacts_table):
                conn.execute(delete(table).where(table.c.study_name == study, table.c.trial_number == number))

    def study_uid(self, name: str) -> str:
        """The study's identity in this database, created on first use (the first worker's wins)."""
        query = select(study_ids_table.c.uid).where(study_ids_table.c.study_name == name)
        with self.engine.connect() as conn:
            uid = conn.execute(query).scalar()
        if uid is not None:
            return uid
        try:
            with self.engine.begin() as conn:
                row = {"study_name": name, "uid": uuid.uuid4().hex, "created_at": utc_now()}
                conn.execute(insert(study_ids_table).values(**row))
        except IntegrityError:  # another worker created it just now
            pass
        with self.engine.connect() as conn:
            return conn.execute(query).scalar()

    # -- reads --------------------------------------------------------------------------------------
    def _frame(self, table: Table, study: str | None) -> pd.DataFrame:
        # deferred: pandas is a third of a second of start-up that the writers (a running study) never use
        import pandas as pd

        if not self.has_schema():
            return pd.DataFrame(columns=[c.name for c in table.columns])
        query = select(table)
        if study is not None:
            query = query.where(table.c.study_name == study)
        with self.engine.connect() as conn:
            return pd.DataFrame(conn.execute(query).mappings().all(), columns=[c.name for c in table.columns])

    def studies(self) -> pd.DataFrame:
        return self._frame(studies_table, None)

    def study(self, name: str) -> dict[str, Any] | None:
        frame = self._frame(studies_table, name)
        return None if frame.empty else frame.iloc[0].to_dict()

    def trials(self, study: str | None = None) -> pd.DataFrame:
        return self._frame(trials_table, study).sort_values(["study_name", "trial_number"], ignore_index=True)

    def running_trials(self, study: str) -> set[int]:
        """Numbers of the study's trials in state ``running``."""
        if not self.has_schema():
            return set()
        query = select(trials_table.c.trial_number).where(
            trials_table.c.study_name == study, trials_table.c.state == "running"
        )
        with self.engine.connect() as conn:
            return set(conn.execute(query).scalars())

    def state_counts(self, study: str) -> dict[str, int]:
        """How many of the study's trials are in each state (``running``, ``complete``, ``failed``, ...)."""
        if not self.has_schema():
            return {}
        query = (
            select(trials_table.c.state, func.count())
            .where(trials_table.c.study_name == study)
            .group_by(trials_table.c.state)
        )
        with self.engine.connect() as conn:
            return {state: int(n) for state, n in conn.execute(query)}

    def metrics(self, study: str | None = None) -> pd.DataFrame:
        return self._frame(metrics_table, study)

    def artifacts(self, study: str | None = None) -> pd.DataFrame:
        return self._frame(artifacts_table, study)

    def claims(self, study: str | None = None) -> pd.DataFrame:
        return self._frame(claims_table, study)
