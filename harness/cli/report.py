"""``python -m harness.report --study NAME [--storage URL] [--out DIR]``: render a study's report from the database."""

from __future__ import annotations

import argparse
import sys

from harness.cli.common import cli_main
from harness.report.render import render_report


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m harness.report",
        description="Render a study's report (index.html, trials.csv, summary.csv, plots) from the database.",
    )
    parser.add_argument("--study", required=True, help="study name")
    parser.add_argument("--storage", help="database URL (default: $HARNESS_STORAGE or sqlite:///results/harness.db)")
    parser.add_argument("--out", help="output folder (default: reports/NAME/)")
    return parser.parse_args(argv)


@cli_main
def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    index = render_report(args.storage, args.study, args.out)
    print(f"report: {index}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
