"""``python -m harness.study``: run (or resume) a study (``harness.cli.study``)."""

import sys

from harness.threads import apply_wait_policy

apply_wait_policy()  # before torch is imported (below): OpenMP reads its wait policy when it is loaded

from harness.cli.study import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
