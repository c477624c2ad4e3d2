"""The hostile-input corpus beyond ``tests/invalid_studies`` (whose files ``test_study_files`` runs): dataset
files, study-file paths, storage URLs, databases and SQL that a hostile or unlucky user could hand to
``harness.study``, ``harness.report`` and ``harness.query``.

Every case exits 2 with exactly one ``error:`` line on stderr that says what is wrong, no traceback, and
writes nothing: the working directory (results, reports) stays empty, no cache appears, and the inputs
(a database it was pointed at included) are unchanged byte for byte. Cases that would hang or exhaust memory
if their guard were missing (``ISOLATED``) run in a subprocess under an address-space limit, with a timeout
that only guards against hangs; the others call the CLI's ``main`` in-process.
"""

from __future__ import annotations

import json
import os
import resource
import socket
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch
from hostile_fixtures import (
    BASE_STUDY,
    FIXTURE_STUDY,
    corrupt_zip,
    fixture_database,
    image_folder,
    image_zip,
    png_pixel_bomb,
    snapshot,
    truncated_zip,
    zip_bomb,
)

from harness.query import main as query_main
from harness.report.__main__ import main as report_main
from harness.study import main as study_main

ROOT = Path(__file__).resolve().parent.parent
INVALID = ROOT / "tests" / "invalid_studies"
MAINS = {"study": study_main, "report": report_main, "query": query_main}
ADDRESS_SPACE = 8 << 30  # bytes; importing torch maps about 4 GiB, any of the bombs would need far more
HANG_GUARD_S = 300  # only guards against a hang; never a speed assertion


@dataclass
class Case:
    cli: str  # study | report | query
    make: Callable[[Path], list[str]]  # builds the inputs in the given folder, returns the arguments
    expect: str  # part of the error line
    env: dict[str, str] = field(default_factory=dict)


def study(d: Path, *sets: str, storage: str | None = None) -> list[str]:
    (d / "s.yaml").write_text(BASE_STUDY)
    args = [str(d / "s.yaml"), "--storage", storage if storage is not None else f"sqlite:///{d / 'h.db'}"]
    return args + [a for s in sets for a in ("--set", s)]


def folder_dataset(path: Path | str, resolution: int = 16) -> str:
    return f"dataset={{name: folder, path: '{path}', resolution: {resolution}}}"


def with_file(make: Callable[[Path], Path]) -> Callable[[Path], list[str]]:
    """A study whose dataset is the file or folder ``make`` builds."""
    return lambda d: study(d, folder_dataset(make(d)))


def fifo(path: Path) -> Path:
    os.mkfifo(path)
    return path


def self_link(path: Path) -> Path:
    path.symlink_to(path.name)
    return path


def looped_folder(d: Path) -> Path:
    root = image_folder(d / "imgs", 3)
    (root / "again").symlink_to("..")
    return root


def text_files_named_png(d: Path) -> Path:
    (d / "imgs").mkdir()
    for name in ("a.png", "b.png", "c.jpg"):
        (d / "imgs" / name).write_text("not an image\n")
    return d / "imgs"


def fifo_among_images(d: Path) -> Path:
    root = image_folder(d / "imgs", 2)
    os.mkfifo(root / "z.png")
    return root


def big_study_file(d: Path) -> list[str]:
    (d / "s.yaml").write_text(BASE_STUDY + "#" * (2 << 20) + "\n")
    return [str(d / "s.yaml")]


def alias_bomb(levels: int = 8) -> str:
    """A one-line YAML flow sequence whose aliases expand to 10^levels scalars ("billion laughs")."""
    items = ["&l0 [" + ",".join(["1"] * 10) + "]"]
    items += [f"&l{i} [" + ",".join([f"*l{i - 1}"] * 10) + "]" for i in range(1, levels)]
    return "[" + ", ".join(items) + "]"


def database(d: Path, **kwargs) -> str:
    return fixture_database(d / "h.db", **kwargs)


def corrupt_database(d: Path) -> str:
    (d / "h.db").write_bytes(os.urandom(8192))
    return f"sqlite:///{d / 'h.db'}"


def reader(cli: str, storage: Callable[[Path], str], *extra: str) -> Callable[[Path], list[str]]:
    names = ["--study", FIXTURE_STUDY] if cli == "report" else []
    return lambda d: [*names, "--storage", storage(d), *extra]


def sql(statement: str) -> Case:
    return Case("query", reader("query", database, "--sql", statement), "--sql: ")


SILENT_SERVER = socket.create_server(("127.0.0.1", 0), backlog=16)  # accepts TCP, never answers
SILENT_URL = f"postgresql://u:p@127.0.0.1:{SILENT_SERVER.getsockname()[1]}/db"
REFUSED_URL = "postgresql://u:p@127.0.0.1:1/db"  # nothing listens on port 1
SILENT = {"HARNESS_MAX_CONNECT_SECONDS": "2"}
LIMITED_SQL = {"HARNESS_MAX_SQL_SECONDS": "1"}
FIXED_CUDA = "train.device=cuda"

CASES = {
    # datasets: found before anything is written
    "dataset_missing_path": Case("study", lambda d: study(d, folder_dataset(d / "nope")), "dataset.path: "),
    "dataset_fifo": Case("study", with_file(lambda d: fifo(d / "data")), "not a directory or a regular file"),
    "dataset_dev_zero": Case("study", lambda d: study(d, folder_dataset("/dev/zero")), "not a directory or a regular"),
    "dataset_self_symlink": Case("study", with_file(lambda d: self_link(d / "loop")), "dataset.path: cannot open"),
    "dataset_symlink_loop_inside": Case("study", with_file(looped_folder), "symbolic link loop"),
    "dataset_folder_of_non_images": Case("study", with_file(text_files_named_png), "cannot decode image"),
    "dataset_no_images": Case("study", with_file(lambda d: (d / "empty").mkdir() or d / "empty"), "no images"),
    "dataset_one_image": Case("study", with_file(lambda d: image_folder(d / "imgs", 1)), "at least 2"),
    "dataset_fifo_among_images": Case("study", with_file(fifo_among_images), "'z.png' is not a regular file"),
    "dataset_corrupt_zip": Case("study", with_file(lambda d: corrupt_zip(d / "c.zip")), "Bad CRC-32"),
    "dataset_truncated_zip": Case(
        "study", with_file(lambda d: truncated_zip(d / "t.zip")), "neither a directory nor a .zip file"
    ),
    "dataset_zip_bomb": Case("study", with_file(lambda d: zip_bomb(d / "b.zip")), "HARNESS_MAX_ZIP_RATIO"),
    "dataset_png_pixel_bomb": Case(
        "study", with_file(lambda d: png_pixel_bomb(image_folder(d / "imgs", 1) / "a.png").parent), "IMAGE_PIXELS"
    ),
    "dataset_images_too_small": Case(
        "study", with_file(lambda d: image_folder(d / "imgs", 3, (8, 8))), "dataset.resolution: "
    ),
    "dataset_file_over_limit": Case(
        "study",
        with_file(lambda d: image_zip(d / "z.zip", 3)),
        "HARNESS_MAX_FILE_BYTES",
        {"HARNESS_MAX_FILE_BYTES": "50"},
    ),
    "dataset_too_many_images": Case(
        "study", with_file(lambda d: image_folder(d / "imgs", 3)), "HARNESS_MAX_IMAGES", {"HARNESS_MAX_IMAGES": "2"}
    ),
    "dataset_bytes_over_limit": Case(
        "study", with_file(lambda d: image_folder(d / "imgs", 3)), "DATASET_BYTES", {"HARNESS_MAX_DATASET_BYTES": "99"}
    ),
    "device_cuda_without_cuda": Case("study", lambda d: study(d, FIXED_CUDA), "train.device: 'cuda'"),
    # study files and --set values
    "study_file_fifo": Case("study", lambda d: [str(fifo(d / "s.yaml"))], "not a regular file"),
    "study_file_dev_zero": Case("study", lambda d: ["/dev/zero"], "not a regular file"),
    "study_file_self_symlink": Case("study", lambda d: [str(self_link(d / "s.yaml"))], "s.yaml: cannot open"),
    "study_file_too_large": Case("study", big_study_file, "HARNESS_MAX_STUDY_FILE_BYTES"),
    "study_alias_bomb": Case("study", lambda d: [str(INVALID / "yaml_alias_bomb.yaml")], "HARNESS_MAX_YAML_NODES"),
    "study_grid_of_1e12_cells": Case("study", lambda d: [str(INVALID / "grid_too_many_cells.yaml")], "MAX_TRIALS"),
    "set_alias_bomb": Case("study", lambda d: study(d, f"train.betas={alias_bomb()}"), "HARNESS_MAX_YAML_NODES"),
    "limit_env_not_a_number": Case(
        "study", study, "$HARNESS_MAX_STEPS: must be a positive integer", {"HARNESS_MAX_STEPS": "lots"}
    ),
    # storage URLs and databases, for the study
    "study_storage_empty": Case("study", lambda d: study(d, storage=""), "--storage: empty"),
    "study_storage_sqlite_in_memory": Case("study", lambda d: study(d, storage="sqlite://"), "in-memory database"),
    "study_storage_sqlite_memory_path": Case("study", lambda d: study(d, storage="sqlite:///:memory:"), "in-memory"),
    "study_storage_mysql_without_driver": Case(
        "study", lambda d: study(d, storage="mysql://u@127.0.0.1/db"), "driver for mysql://u@127.0.0.1/db"
    ),
    "study_storage_fifo": Case("study", lambda d: study(d, storage=f"sqlite:///{fifo(d / 'f.db')}"), "regular file"),
    "study_storage_directory": Case("study", lambda d: study(d, storage=f"sqlite:///{d}"), "is a directory"),
    "study_storage_corrupt_sqlite": Case("study", lambda d: study(d, storage=corrupt_database(d)), "not a database"),
    "study_storage_read_only_sqlite": Case(
        "study",
        lambda d: study(d, storage=database(d).replace("sqlite:///", "sqlite:///file:") + "?mode=ro&uri=true"),
        "readonly database",
    ),
    "study_storage_future_schema": Case(
        "study", lambda d: study(d, storage=database(d, schema_version=2)), "schema version 2"
    ),
    "study_postgres_refused": Case("study", lambda d: study(d, storage=REFUSED_URL), "storage postgresql://u:***@"),
    "study_postgres_silent": Case("study", lambda d: study(d, storage=SILENT_URL), "timeout", SILENT),
    # the report
    "report_storage_empty": Case("report", reader("report", lambda d: ""), "--storage: empty"),
    "report_missing_database": Case("report", reader("report", lambda d: f"sqlite:///{d / 'no.db'}"), "no database"),
    "report_sqlite_in_memory": Case("report", reader("report", lambda d: "sqlite://"), "in-memory"),
    "report_corrupt_sqlite": Case("report", reader("report", corrupt_database), "not a database"),
    "report_future_schema": Case("report", reader("report", lambda d: database(d, schema_version=2)), "version 2"),
    "report_postgres_refused": Case("report", reader("report", lambda d: REFUSED_URL), "storage postgresql://"),
    "report_out_below_a_file": Case(
        "report",
        reader("report", database, "--out", "/dev/null/report"),
        "--out: cannot create the folder /dev/null/report",
    ),
    "report_postgres_silent": Case("report", reader("report", lambda d: SILENT_URL), "timeout", SILENT),
    # the query
    "query_storage_empty": Case("query", reader("query", lambda d: ""), "--storage: empty"),
    "query_missing_database": Case("query", reader("query", lambda d: f"sqlite:///{d / 'no.db'}"), "no database"),
    "query_corrupt_sqlite": Case("query", reader("query", corrupt_database), "not a database"),
    "query_future_schema": Case("query", reader("query", lambda d: database(d, schema_version=2)), "version 2"),
    "query_postgres_refused": Case("query", reader("query", lambda d: REFUSED_URL), "storage postgresql://"),
    "query_postgres_silent": Case("query", reader("query", lambda d: SILENT_URL), "timeout", SILENT),
    "query_sql_empty": Case("query", reader("query", database, "--sql", ""), "--sql: empty"),
    "query_sql_only_a_comment": Case("query", reader("query", database, "--sql", "-- ; nothing"), "no SQL statement"),
    "query_sql_and_summary": Case("query", reader("query", database, "--sql", "SELECT 1", "--summary"), "one of them"),
    "query_sql_two_statements": sql("SELECT 1; SELECT 2"),
    "query_sql_select_commit_drop": sql("SELECT 1; COMMIT; DROP TABLE harness_metrics; COMMIT"),
    "query_sql_with_delete_returning": sql("WITH x AS (SELECT 1) DELETE FROM harness_trials RETURNING *"),
    "query_sql_update_optuna_trials": sql("UPDATE trials SET state = 'FAIL'"),
    "query_sql_insert_metric": sql("INSERT INTO harness_metrics (study_name, trial_number, name) VALUES ('a', 0, 'x')"),
    "query_sql_drop_table": sql("DROP TABLE harness_metrics"),
    "query_sql_create_table": sql("CREATE TABLE evil (x)"),
    "query_sql_attach": sql("ATTACH DATABASE 'evil.db' AS evil"),
    "query_sql_vacuum_into": sql("VACUUM INTO 'copy.db'"),
    "query_sql_pragma_write": sql("PRAGMA query_only = OFF"),
    "query_sql_begin": sql("BEGIN IMMEDIATE"),
    "query_sql_infinite_recursion": Case(
        "query",
        reader(
            "query",
            database,
            "--sql",
            "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT count(*) FROM c",
        ),
        "stopped after 1 s (HARNESS_MAX_SQL_SECONDS)",
        LIMITED_SQL,
    ),
    "query_sql_too_many_rows": Case(
        "query",
        reader("query", database, "--sql", "SELECT * FROM harness_metrics"),
        "more than 1 rows",
        {"HARNESS_MAX_SQL_ROWS": "1"},
    ),
}
# cases that would hang or exhaust memory if their guard were missing: subprocesses under ADDRESS_SPACE
ISOLATED = [
    "dataset_fifo",
    "dataset_zip_bomb",
    "study_file_dev_zero",
    "study_alias_bomb",
    "study_grid_of_1e12_cells",
    "study_postgres_silent",
    "report_postgres_silent",
    "query_postgres_silent",
    "query_sql_infinite_recursion",
]


def folders(tmp: Path) -> tuple[Path, Path, Path]:
    inputs, work, cache = tmp / "inputs", tmp / "work", tmp / "cache"
    inputs.mkdir()
    work.mkdir()
    return inputs, work, cache


def check_outcome(name: str, code: int, err: str, inputs: Path, work: Path, cache: Path, before: dict) -> None:
    lines = err.splitlines()
    assert code == 2, f"{name}: exit {code}: {err[-2000:]}"
    assert len(lines) == 1 and lines[0].startswith("error: "), f"{name}: {err[-2000:]}"
    assert "Traceback" not in err
    assert CASES[name].expect in lines[0], lines[0]
    assert list(work.iterdir()) == [], f"{name} wrote {list(work.iterdir())}"
    assert not cache.exists(), f"{name} wrote to the cache"
    assert snapshot(inputs) == before, f"{name} changed its inputs"


def skip_unless_runnable(name: str) -> None:
    if name == "device_cuda_without_cuda" and torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    if name == "study_storage_mysql_without_driver":
        try:
            import MySQLdb  # noqa: F401
        except ImportError:
            return
        pytest.skip("the MySQL driver is installed here")


def clean_env(monkeypatch, case: Case, cache: Path) -> None:
    monkeypatch.delenv("HARNESS_STORAGE", raising=False)
    monkeypatch.setenv("HARNESS_CACHE_DIR", str(cache))
    for key, value in case.env.items():
        monkeypatch.setenv(key, value)


@pytest.mark.parametrize("name", [n for n in CASES if n not in ISOLATED])
def test_hostile_input_in_process(name: str, tmp_path: Path, monkeypatch, capsys):
    skip_unless_runnable(name)
    case = CASES[name]
    inputs, work, cache = folders(tmp_path)
    args = case.make(inputs)
    before = snapshot(inputs)
    clean_env(monkeypatch, case, cache)
    monkeypatch.chdir(work)
    code = MAINS[case.cli](args)
    check_outcome(name, code, capsys.readouterr().err, inputs, work, cache, before)


# Runs cases in one process (the imports are paid once): a JSON file of cases (argv[1]), one JSON line of
# (name, exit code, stderr) per case on stdout as soon as it ends, so a hang shows which case hung.
BATCH = """
import contextlib, io, json, os, sys, traceback
from harness.query import main as query
from harness.report.__main__ import main as report
from harness.study import main as study
mains = {"study": study, "report": report, "query": query}
for case in json.loads(open(sys.argv[1]).read()):
    saved = dict(os.environ)
    os.environ.update(case["env"])
    os.chdir(case["cwd"])
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        try:
            code = mains[case["cli"]](case["args"])
        except BaseException:
            code, _ = 1, traceback.print_exc()
    os.environ.clear()
    os.environ.update(saved)
    print(json.dumps([case["name"], code, err.getvalue()]), flush=True)
"""


def _limit_address_space() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (ADDRESS_SPACE, ADDRESS_SPACE))


@pytest.fixture(scope="module")
def isolated_outcomes(tmp_path_factory) -> dict[str, tuple]:
    """Every isolated case, in two concurrent subprocesses (the study's cases, the readers' cases), each
    limited to ADDRESS_SPACE bytes of address space."""
    batches: dict[bool, list[dict]] = {True: [], False: []}
    places = {}
    for name in ISOLATED:
        inputs, work, cache = folders(tmp_path_factory.mktemp(name))
        args = CASES[name].make(inputs)
        places[name] = (inputs, work, cache, snapshot(inputs))
        env = {**CASES[name].env, "HARNESS_CACHE_DIR": str(cache)}
        case = {"name": name, "cli": CASES[name].cli, "args": args, "env": env, "cwd": str(work)}
        batches[CASES[name].cli == "study"].append(case)
    env = {k: v for k, v in os.environ.items() if k != "HARNESS_STORAGE"}
    env.update(PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    procs = []
    for i, cases in enumerate(batches.values()):
        listing = tmp_path_factory.getbasetemp() / f"isolated_{i}.json"
        listing.write_text(json.dumps(cases))
        proc = subprocess.Popen(
            [sys.executable, "-c", BATCH, str(listing)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            preexec_fn=_limit_address_space,
        )
        procs.append(proc)
    outcomes, errors = {}, []
    for proc in procs:
        try:
            out, err = proc.communicate(timeout=HANG_GUARD_S)  # both run meanwhile; their output is small
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
        errors.append(err[-2000:])
        for line in out.splitlines():
            name, code, stderr = json.loads(line)
            outcomes[name] = (code, stderr, places[name])
    missing = (None, f"no outcome (hung or crashed): {errors}")
    return {n: outcomes.get(n, (*missing, places[n])) for n in ISOLATED}


@pytest.mark.parametrize("name", ISOLATED)
def test_hostile_input_in_a_limited_process(name: str, isolated_outcomes):
    code, err, (inputs, work, cache, before) = isolated_outcomes[name]
    check_outcome(name, code, err, inputs, work, cache, before)


def test_the_corpus_covers_every_entry_point():
    by_cli = {cli: sum(c.cli == cli for c in CASES.values()) for cli in MAINS}
    assert min(by_cli.values()) >= 7 and len(CASES) + len(list(INVALID.glob("*.yaml"))) >= 100, by_cli
