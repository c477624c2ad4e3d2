"""``python -m harness.report``: the report command (``harness.cli.report``)."""

import sys

from harness.cli.report import main

if __name__ == "__main__":
    sys.exit(main())
