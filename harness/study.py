"""``python -m harness.study``: run (or resume) a study (``harness.cli.study``)."""

import sys

from harness.cli.study import main

if __name__ == "__main__":
    sys.exit(main())
