"""Start-up time of the command lines: ``python -m harness.study STUDY --dry-run`` and ``python -m harness.query``,
this checkout against an earlier revision (``--before``), side by side.

    python bench/startup.py [--before REV] [--runs 5] [--study studies/schedule_shift.yaml]

Each command runs ``--runs`` times per tree, the trees alternating, in fresh processes; printed are the median
wall time and the median CPU time (user + system of the child: it hardly moves when other processes share the
cores, the wall time does), then the packages with the largest import times (``python -X importtime``,
cumulative microseconds of each top-level package) and which heavy packages each command loaded at all.
The query runs against an empty harness database (the import work is the same as with rows).
The goal of issue 14: under 2 s on a quiet machine (compare the CPU column when the machine is busy).
"""

from __future__ import annotations

import argparse
import ast
import os
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path[:0] = [str(Path(__file__).resolve().parent), str(Path(__file__).resolve().parent.parent)]

from revision import ROOT, checkout, describe  # noqa: E402

from harness.store.connect import open_store  # noqa: E402

HEAVY = ("torch", "torch._dynamo", "torchvision", "cleanfid.utils", "scipy", "matplotlib", "seaborn", "optuna")
HEAVY += ("pandas", "sqlalchemy")
PROBE = """import runpy, sys
sys.argv = {argv!r}
try:
    runpy.run_module({mod!r}, run_name="__main__")
except SystemExit:
    pass
print("LOADED", [m for m in {heavy!r} if m in sys.modules], file=sys.stderr)
"""


def commands(study: str, db: str) -> dict[str, list[str]]:
    return {
        "study --dry-run": ["-m", "harness.study", study, "--dry-run"],
        "query": ["-m", "harness.query", "--storage", db],
    }


def environ(tree: Path) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(tree), "OMP_NUM_THREADS": "1"}


def timed(tree: Path, args: list[str]) -> tuple[float, float]:
    """(wall s, CPU s of the child) of one run."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = subprocess.run([sys.executable, *args], cwd=tree, env=environ(tree), capture_output=True, text=True)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(args)} in {tree} failed ({done.returncode}):\n{done.stderr[-2000:]}")
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def import_profile(tree: Path, args: list[str], top: int) -> tuple[list[tuple[str, int]], list[str]]:
    """(the ``top`` third-party top-level packages by cumulative import time, heavy packages loaded)."""
    mod, argv = args[1], [args[1], *args[2:]]
    code = PROBE.format(argv=argv, mod=mod, heavy=HEAVY)
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", code], cwd=tree, env=environ(tree), capture_output=True, text=True
    )
    best: dict[str, int] = {}
    loaded: list[str] = []
    for line in done.stderr.splitlines():
        m = re.match(r"import time:\s+\d+ \|\s+(\d+) \|(\s*)(\S+)", line)
        if m:
            root = m.group(3).split(".")[0]
            if root not in ("harness", "components", "encodings", "_frozen_importlib_external"):
                best[root] = max(best.get(root, 0), int(m.group(1)))
        elif line.startswith("LOADED "):
            loaded = ast.literal_eval(line[len("LOADED ") :])
    return sorted(best.items(), key=lambda kv: -kv[1])[:top], loaded


def make_database(path: Path) -> str:
    """An empty harness database (schema only), made with this checkout's store."""
    url = f"sqlite:///{path}"
    open_store(url, create=True).engine.dispose()
    return url


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", default=None, help="git revision to compare with (e.g. 6ecfae0)")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--top", type=int, default=8, help="packages listed from -X importtime")
    parser.add_argument("--study", default="studies/schedule_shift.yaml")
    args = parser.parse_args()
    study = str((ROOT / args.study).resolve())
    with tempfile.TemporaryDirectory() as tmp, checkout(args.before or "HEAD") as old:
        db = make_database(Path(tmp) / "harness.db")
        trees = {"after": ROOT} | ({"before": old} if args.before else {})
        cmds = commands(study, db)
        load = os.getloadavg()[0]
        print(f"# {sys.executable}, load average {load:.1f}, {os.cpu_count()} CPUs, {args.runs} runs each")
        if args.before:
            print(f"# before: {describe(args.before)}\n# after:  this checkout ({describe('HEAD')}, plus edits)")
        times: dict[tuple[str, str], list[tuple[float, float]]] = {}
        for _ in range(args.runs):
            for name, cmd in cmds.items():
                for label, tree in trees.items():
                    times.setdefault((name, label), []).append(timed(tree, cmd))
        print(f"\n{'command':16} {'tree':6} {'wall s (median, min-max)':>26} {'CPU s (median, min-max)':>25}")
        for (name, label), runs in times.items():
            wall, cpu = [r[0] for r in runs], [r[1] for r in runs]
            print(
                f"{name:16} {label:6} {statistics.median(wall):10.2f} ({min(wall):.2f}-{max(wall):.2f})"
                f" {statistics.median(cpu):12.2f} ({min(cpu):.2f}-{max(cpu):.2f})"
            )
        for name, cmd in cmds.items():
            for label, tree in trees.items():
                top, loaded = import_profile(tree, cmd, args.top)
                shown = ", ".join(f"{pkg} {us / 1e6:.2f}" for pkg, us in top)
                print(f"\n# {name} ({label}): -X importtime, s cumulative: {shown}")
                print(f"#   heavy packages loaded: {', '.join(loaded) or 'none'}")


if __name__ == "__main__":
    main()
