"""``python -m harness.query``: print results or run one read-only SQL statement (``harness.cli.query``)."""

import sys

from harness.cli.query import main

if __name__ == "__main__":
    sys.exit(main())
