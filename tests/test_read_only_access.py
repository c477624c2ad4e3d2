"""Readers never change a database: ``harness.query --sql`` runs exactly one read-only statement (checked
against SQLite's and PostgreSQL's own parsers), reports, queries and ``harness.results`` open databases
read-only, and what a database holds is shown safely (no terminal escapes, no spreadsheet formulas).

PostgreSQL tests need ``HARNESS_TEST_POSTGRES_URL`` (``.ci/run`` starts a server); without it they skip.
"""

from __future__ import annotations

import csv
import json
import os
import sqlite3
import uuid

import optuna
import pytest
from hostile_fixtures import BASE_STUDY, FIXTURE_STUDY, fixture_database, snapshot
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from harness import results
from harness.paths import MAX_SLUG, slug
from harness.query import main as query_main
from harness.report.__main__ import main as report_main
from harness.safe_text import spreadsheet_safe, terminal_safe
from harness.store.connect import make_engine, open_store
from harness.store.readonly_sql import split_statements
from harness.study import main as study_main

PG_URL = os.environ.get("HARNESS_TEST_POSTGRES_URL")

# (SQL, statements in it for SQLite, for PostgreSQL): quotes, identifiers, comments and dollar quotes hide ';'
SPLITS = [
    ("SELECT ';' AS a", 1, 1),
    ("SELECT 1;", 1, 1),
    ("SELECT 1; -- a comment ; with a semicolon", 1, 1),
    ("SELECT /* ; */ 1", 1, 1),
    ('SELECT 1 AS "a;b"', 1, 1),
    ("SELECT 'it''s; fine'", 1, 1),
    ("SELECT 1; SELECT 2", 2, 2),
    ("SELECT 'x' ; SELECT 'y' ; SELECT 3", 3, 3),
    ("SELECT 1 AS [a;b]", 1, None),  # brackets quote identifiers in SQLite only
    ("SELECT 1 AS `a;b`", 1, None),
    ("SELECT /* /* ; */ 1; SELECT 2", 2, None),  # SQLite ends a comment at the first */
    ("SELECT $$a;b$$", None, 1),
    ("SELECT $tag$ ; $tag$", None, 1),
    ("SELECT E'\\';' AS a", None, 1),  # an E-string's \' is a quote inside the string
    ("SELECT E'\\\\'; SELECT 2", None, 2),
    ("SELECT /* /* ; */ ; */ 1", None, 1),  # PostgreSQL nests comments
]


@pytest.mark.parametrize("sql, n_sqlite, n_pg", SPLITS)
def test_statements_are_split_like_the_database_does(sql, n_sqlite, n_pg):
    conn = sqlite3.connect(":memory:")
    if n_sqlite is not None:
        assert len(split_statements(sql, "sqlite")) == n_sqlite
        try:  # SQLite's own parser, through Python's driver: several statements are refused
            conn.execute(sql)
            assert n_sqlite == 1
        except sqlite3.ProgrammingError as err:
            assert "one statement at a time" in str(err) and n_sqlite > 1
    if n_pg is not None:
        assert len(split_statements(sql, "postgresql")) == n_pg
        if PG_URL:  # the server's parser: a prepared statement holds one command
            import psycopg

            with psycopg.connect(PG_URL.replace("postgresql+psycopg", "postgresql")) as pg, pg.cursor() as cur:
                try:
                    cur.execute(sql, prepare=True)
                    assert n_pg == 1
                except psycopg.errors.SyntaxError as err:
                    assert "multiple commands" in str(err) and n_pg > 1


def test_readers_leave_the_database_file_untouched(tmp_path, capsys):
    url = fixture_database(tmp_path / "h.db")
    before, mtime = snapshot(tmp_path), (tmp_path / "h.db").stat().st_mtime_ns
    assert len(results.load(url, FIXTURE_STUDY)) == 2
    assert query_main(["--storage", url, "--sql", "SELECT count(*) AS n FROM harness_trials", "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out) == [{"n": 2}]
    assert report_main(["--study", FIXTURE_STUDY, "--storage", url, "--out", str(tmp_path.parent / "report")]) == 0
    assert snapshot(tmp_path) == before and (tmp_path / "h.db").stat().st_mtime_ns == mtime
    # a database that is read-only to SQLite reads fine
    ro = f"sqlite:///file:{tmp_path / 'h.db'}?mode=ro&uri=true"
    assert list(results.load(ro, FIXTURE_STUDY)["state"]) == ["complete", "failed"]


def test_a_reader_connection_cannot_write(tmp_path):
    store = open_store(fixture_database(tmp_path / "h.db"), create=False)
    with pytest.raises(SQLAlchemyError, match="readonly|read-only"), store.engine.begin() as conn:
        conn.execute(text("DELETE FROM harness_metrics"))
    assert len(store.metrics(FIXTURE_STUDY)) == 2


@pytest.mark.parametrize("fmt", ["table", "csv"])
def test_query_shows_control_characters_as_escapes(fmt, tmp_path, capsys):
    url = fixture_database(tmp_path / "h.db")
    assert query_main(["--storage", url, "--study", FIXTURE_STUDY, "--format", fmt]) == 0
    out = capsys.readouterr().out
    assert "bad \\x1b[2J\\x1b]0;pwned\\x07" in out
    assert not any(ord(c) < 32 and c != "\n" or 0x7F <= ord(c) <= 0x9F for c in out)
    assert query_main(["--storage", url, "--sql", 'SELECT char(27, 91, 50, 74) AS "x\x1b[2J"']) == 0
    assert capsys.readouterr().out.split() == ["x\\x1b[2J", "\\x1b[2J"]


def test_json_keeps_the_stored_text_exactly(tmp_path, capsys):
    url = fixture_database(tmp_path / "h.db")
    assert query_main(["--storage", url, "--study", FIXTURE_STUDY, "--format", "json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert rows[1]["error"] == "bad \x1b[2J\x1b]0;pwned\x07"


def test_csv_files_carry_no_spreadsheet_formulas_and_numbers_stay_numbers(tmp_path):
    url = fixture_database(tmp_path / "h.db")
    out = tmp_path / "report"
    assert report_main(["--study", FIXTURE_STUDY, "--storage", url, "--out", str(out)]) == 0
    rows = list(csv.DictReader((out / "trials.csv").open()))
    assert [r["diffusion.loss"] for r in rows] == ['\'=HYPERLINK("http://x")', "-0.5"]
    assert [float(r["swd"]) for r in rows] == [-0.25, -0.5]
    summary = list(csv.DictReader((out / "summary.csv").open()))
    assert {r["level"] for r in summary} == {'\'=HYPERLINK("http://x")', "-0.5"}
    for row in rows + summary:
        assert not any(v.startswith(("=", "+", "@", "\t", "\r")) for v in row.values())


@pytest.mark.parametrize(
    "value, shown",
    [
        ("=1+2", "'=1+2"),
        ("+cmd|' /C calc'!A0", "'+cmd|' /C calc'!A0"),
        ("-2+3", "'-2+3"),
        ("@SUM(A1)", "'@SUM(A1)"),
        ("\tx", "'\tx"),
        ("-0.5", "-0.5"),
        ("+3e-4", "+3e-4"),
        ("cosine", "cosine"),
        (-0.5, -0.5),
    ],
)
def test_spreadsheet_safe(value, shown):
    assert spreadsheet_safe(value) == shown


def test_terminal_safe_escapes_c0_c1_and_bidi_controls():
    assert terminal_safe("a\x1b[31mb\x9bc\u202ed\x7f") == "a\\x1b[31mb\\x9bc\\u202ed\\x7f"
    assert terminal_safe("plain – ünïcode") == "plain – ünïcode"


def test_a_300_character_study_name_runs_and_reports(tmp_path, monkeypatch, capsys):
    """Folders are named by a bounded slug (cut, plus a hash of the whole name), so long names work."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HARNESS_CACHE_DIR", str(tmp_path / "cache"))
    name = "ablation of / everything " * 12
    (tmp_path / "s.yaml").write_text(BASE_STUDY)
    url = f"sqlite:///{tmp_path / 'h.db'}"
    assert study_main(["s.yaml", "--storage", url, "--quiet", "--set", f"name={name!r}"]) == 0
    assert list(results.load(url, name)["state"]) == ["complete"]
    assert report_main(["--study", name, "--storage", url]) == 0
    (folder,) = (tmp_path / "reports").iterdir()
    assert folder.name == slug(name) and len(folder.name) == MAX_SLUG and (folder / "index.html").is_file()
    assert (tmp_path / slug(name)).is_dir()  # the trial's checkpoints, beside the database
    assert slug(name + "x") != slug(name)


@pytest.fixture
def pg_store():
    if not PG_URL:
        if os.environ.get("CI"):
            pytest.fail("HARNESS_TEST_POSTGRES_URL is not set in CI: .ci/run should have started PostgreSQL")
        pytest.skip("no PostgreSQL server (set HARNESS_TEST_POSTGRES_URL)")
    store = open_store(PG_URL)
    name = f"ro_{uuid.uuid4().hex[:8]}"
    store.record_study(name, None, {}, {}, [])
    store.start_trial(name, 0, {"x": 1}, {}, {"host": "box"})
    store.add_metrics(name, 0, [{"name": "swd", "value": 1.0}])
    optuna.create_study(study_name=name, storage=PG_URL).add_trial(optuna.trial.create_trial(value=1.0))
    return store, name


def pg_state(store) -> dict:
    tables = ["harness_trials", "harness_metrics", "harness_studies", "trials", "studies"]
    with store.engine.connect() as conn:
        state = {t: conn.execute(text(f"SELECT count(*) FROM {t}")).scalar() for t in tables}
        state["tables"] = sorted(conn.execute(text("SELECT tablename FROM pg_tables")).scalars())
    return state


PG_ATTACKS = [
    "SELECT 1; COMMIT; DROP TABLE harness_metrics; COMMIT",
    "WITH x AS (SELECT 1) DELETE FROM harness_trials RETURNING *",
    "DELETE FROM harness_metrics",
    "UPDATE trials SET state = 'FAIL'",
    "DROP TABLE harness_metrics",
    "COMMIT",
    "SET TRANSACTION READ WRITE",
    "SELECT set_config('transaction_read_only', 'off', true)",
    "SELECT nextval('trials_trial_id_seq')",
    "DO $$BEGIN DELETE FROM harness_trials; END$$",
]


@pytest.mark.postgres
@pytest.mark.parametrize("statement", PG_ATTACKS)
def test_postgres_query_cannot_change_anything(statement, pg_store, capsys):
    store, _ = pg_store
    before = pg_state(store)
    assert query_main(["--storage", PG_URL, "--sql", statement]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --sql: ") and err.count("\n") == 1 and "Traceback" not in err
    assert pg_state(store) == before


@pytest.mark.postgres
def test_postgres_readers_are_read_only(pg_store, capsys):
    store, name = pg_store
    assert list(results.load(PG_URL, name)["swd"]) == [1.0]
    assert (
        query_main(
            ["--storage", PG_URL, "--sql", f"SELECT count(*) AS n FROM harness_trials WHERE study_name = '{name}'"]
        )
        == 0
    )
    assert capsys.readouterr().out.split() == ["n", "1"]
    with pytest.raises(SQLAlchemyError, match="read-only transaction"), make_engine(PG_URL, True).begin() as conn:
        conn.execute(text("DELETE FROM harness_metrics"))
