"""How often loading a study validates component specs: every call of ``components.registry.validate_spec``
(wherever it was imported, nested stems included) while ``load_study`` runs, and while ``--dry-run`` runs
(which also resolves every trial's config again to print it), per shipped study, next to the number of
distinct specs the study's trials use.

Run:  .venv/bin/python bench/validations.py [STUDY.yaml ...]      (default: every file in studies/)
"""

from __future__ import annotations

import contextlib
import io
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import components.registry as registry  # noqa: E402
from harness.cli.study import main as study_main  # noqa: E402
from harness.config import load_study  # noqa: E402

CALLS = [0]
_validate = registry.validate_spec


def counting(*args, **kwargs):
    CALLS[0] += 1
    return _validate(*args, **kwargs)


def counted(fn, *args) -> tuple[object, int]:
    CALLS[0] = 0
    out = fn(*args)
    return out, CALLS[0]


def main() -> int:
    for module in list(sys.modules.values()):
        if getattr(module, "validate_spec", None) is _validate:
            module.validate_spec = counting
    paths = [Path(p) for p in sys.argv[1:]] or sorted((ROOT / "studies").rglob("*.yaml"))
    print(f"{'study':<34} {'load_study':>10} {'--dry-run':>10} {'distinct specs':>15}")
    for path in paths:
        loaded, at_load = counted(load_study, path)
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            _, dry_run = counted(study_main, [str(path), "--dry-run"])
        print(f"{str(path.relative_to(ROOT)):<34} {at_load:>10} {dry_run:>10} {loaded.resolver.validations:>15}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
