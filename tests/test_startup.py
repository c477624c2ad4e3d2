"""Start-up of the command lines: what the dry run and the query load (a ``sys.modules`` check in a fresh
process, not a clock). The heavy packages stay deferred to where they are used (bench/startup.py times it)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from harness.store.connect import open_store

ROOT = Path(__file__).resolve().parents[1]
WATCHED = ("torch", "torch._dynamo", "torchvision", "cleanfid.utils", "requests", "scipy", "matplotlib", "seaborn")
WATCHED += ("optuna", "pandas")
PROBE = """import runpy, sys
sys.argv = {argv!r}
try:
    runpy.run_module({module!r}, run_name="__main__")
except SystemExit as exit:
    code = exit.code
print("LOADED", code, [m for m in {watched!r} if m in sys.modules], file=sys.stderr)
"""


def loaded_by(module: str, *args: str) -> tuple[int, set[str]]:
    """(exit code, the watched packages in ``sys.modules`` after ``python -m module args`` ran)."""
    code = PROBE.format(argv=[module, *args], module=module, watched=WATCHED)
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    line = next(ln for ln in done.stderr.splitlines() if ln.startswith("LOADED "))
    exit_code, _, names = line.removeprefix("LOADED ").partition(" ")
    return int(exit_code), set(ast.literal_eval(names))


def test_the_dry_run_loads_no_fid_no_plots_no_dataframes():
    code, loaded = loaded_by("harness.study", "studies/schedule_shift.yaml", "--dry-run")
    assert code == 0
    assert "torch" in loaded  # the probe sees imports: the networks are built (meta device) to count parameters
    assert not loaded & {"torch._dynamo", "torchvision", "cleanfid.utils", "requests"}
    assert not loaded & {"scipy", "matplotlib", "seaborn", "pandas"}


@pytest.mark.parametrize("args", [(), ("--sql", "SELECT 1 AS one")])
def test_a_query_loads_no_torch(tmp_path: Path, args: tuple[str, ...]):
    url = f"sqlite:///{tmp_path / 'harness.db'}"
    open_store(url, create=True).engine.dispose()
    code, loaded = loaded_by("harness.query", "--storage", url, *args)
    assert code == 0
    assert "pandas" in loaded
    assert not loaded & {"torch", "torchvision", "scipy", "matplotlib", "seaborn", "optuna"}
