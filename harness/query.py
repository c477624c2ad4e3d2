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
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from harness import results
from harness.errors import UsageError, cli_main
from harness.storage import open_store


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m harness.query", description=__doc__.split("\n\n")[1])
    parser.add_argument("--storage", help="database URL (default: $HARNESS_STORAGE or sqlite:///results/harness.db)")
    parser.add_argument("--study", help="study name (default: every study)")
    parser.add_argument("--sql", help="a SELECT statement to run instead")
    parser.add_argument(
        "--summary",
        action="store_true",
        help="print the study's verdicts and effects table (per factor and level; needs --study)",
    )
    parser.add_argument("--format", choices=["table", "csv", "json"], default="table")
    return parser.parse_args(argv)


def render(frame: pd.DataFrame, fmt: str) -> str:
    if fmt == "csv":
        return frame.to_csv(index=False)
    if fmt == "json":
        return frame.to_json(orient="records", date_format="iso", indent=2)
    with pd.option_context("display.max_columns", None, "display.width", 200, "display.max_colwidth", 60):
        return frame.to_string(index=False) if len(frame) else "(no rows)"


def run_sql(storage: str | None, sql: str) -> pd.DataFrame:
    if not sql.lstrip().lower().startswith(("select", "with")):
        raise UsageError("--sql: only SELECT (or WITH ... SELECT) statements are allowed")
    store = open_store(storage, create=False)
    try:
        with store.engine.connect() as conn:
            result = conn.execute(text(sql))
            return pd.DataFrame(result.fetchall(), columns=list(result.keys()))
    except SQLAlchemyError as err:
        raise UsageError(f"--sql: {str(err.orig if hasattr(err, 'orig') else err).splitlines()[0]}") from None


@cli_main
def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.sql and args.summary:
        raise UsageError("--summary and --sql: give one of them")
    if args.sql:
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
