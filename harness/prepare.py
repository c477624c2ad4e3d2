"""``python -m harness.prepare``: prepare a dataset for the ``array`` dataset (``harness.cli.prepare``)."""

import sys

from harness.cli.prepare import main

if __name__ == "__main__":
    sys.exit(main())
