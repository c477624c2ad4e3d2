"""``python -m harness.prepare``: prepare a dataset for the ``array`` dataset (``harness.cli.prepare``)."""

import sys

from harness.threads import apply_wait_policy

apply_wait_policy()  # before torch is imported (below): OpenMP reads its wait policy when it is loaded

from harness.cli.prepare import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
