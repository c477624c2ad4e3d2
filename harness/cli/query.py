"""``python -m harness.query [--storage URL] [--study NAME] [--sql "SELECT ..."] [--summary] [--format table|csv|json]``

Prints one row per trial (the frame of ``harness.results.load``), the effects table of a study
(``--summary``: the numbers of the report's summary.csv, from ``harness.results.summary``, with its verdict
columns; as a table, preceded by one verdict sentence per factor and objective), or the result
of a read-only SQL query against the same database (Optuna's tables and the ``harness_`` tables).
"""

from __future__ import annotations

import argparse
import sys

import pandas as pd

from harness import results
from harness.cli.common import cli_main
from harness.errors import UsageError
from harness.safe_text import frame_for_spreadsheet, frame_for_terminal
from harness.store.connect import open_store
from harness.store.readonly_sql import run_read_only


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m harness.query", description=__doc__.split("\n\n")[1])
    parser.add_argument("--storage", help="database URL (default: $HARNESS_STORAGE or sqlite:///results/harness.db)")
    parser.add_argument("--study", help="study name (default: every study)")
    parser.add_argument("--sql", help="one SELECT statement to run instead (read-only)")
    parser.add_argument(
        "--summary",
        action="store_true",
        help="print the study's verdicts and effects table (per factor and level; needs --study)",
    )
    parser.add_argument("--format", choices=["table", "csv", "json"], default="table")
    return parser.parse_args(argv)


def render(frame: pd.DataFrame, fmt: str) -> str:
    """The frame as text. Table and CSV show stored control characters as visible escapes (a value in the
    database must not drive the terminal), and CSV cells that a spreadsheet would run as formulas are
    quoted (``harness.safe_text``); JSON escapes control characters by itself."""
    if fmt == "json":
        return frame.to_json(orient="records", date_format="iso", indent=2)
    if fmt == "csv":
        return frame_for_spreadsheet(frame_for_terminal(frame)).to_csv(index=False)
    with pd.option_context("display.max_columns", None, "display.width", 200, "display.max_colwidth", 60):
        return frame_for_terminal(frame).to_string(index=False) if len(frame) else "(no rows)"


def run_sql(storage: str | None, sql: str) -> pd.DataFrame:
    """One read-only statement (``harness.store.readonly_sql``) against the existing database at ``storage``."""
    store = open_store(storage, create=False)
    columns, rows = run_read_only(store.url, sql)
    return pd.DataFrame.from_records(rows, columns=columns) if columns else pd.DataFrame()


@cli_main
def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.sql is not None and args.summary:
        raise UsageError("--summary and --sql: give one of them")
    if args.sql is not None:
        if not args.sql.strip():
            raise UsageError("--sql: empty; give one SELECT statement")
        frame = run_sql(args.storage, args.sql)
    elif args.summary:
        if not args.study:
            raise UsageError("--summary: needs --study NAME")
        frame = results.summary(args.storage, args.study)
        if args.format == "table":  # the verdict sentences first, as the report opens with them
            lines = results.verdicts(args.storage, args.study)["headline"]
            sys.stdout.write("Verdict (per factor and objective):\n" + "".join(f"  {h}\n" for h in lines) + "\n")
    else:
        frame = results.load(args.storage, args.study)
        if args.study and frame.empty:
            raise UsageError(f"--study: no trials of study {args.study!r} in the database")
    sys.stdout.write(render(frame, args.format).rstrip("\n") + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
