"""``python -m harness.study STUDY.yaml [--storage URL] [--n-trials N] [--set KEY=VALUE ...] [--dry-run]``

Runs (or resumes) a study: Optuna picks the trials, the runner trains and evaluates each, and every result
lands in the study's database beside Optuna's own tables. Rerunning the same command runs only what is
missing; a failed trial is recorded with its reason and the study goes on.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import sys
from pathlib import Path

import optuna
import yaml

from harness.errors import UsageError, cli_main
from harness.metrics.fidelity import FIDELITY_STDS, GUARD_STD, fidelity_by_std, guard_problems
from harness.recipes import recipe
from harness.space import cell_labels, grid_cells
from harness.storage import check_storage_url, resolve_storage, sqlite_path
from harness.studyfile import LoadedStudy, load_study


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m harness.study", description=__doc__.split("\n\n")[1])
    parser.add_argument("study", help="the study file (YAML)")
    parser.add_argument("--storage", help="database URL (default: study's storage, $HARNESS_STORAGE, sqlite)")
    parser.add_argument("--n-trials", help="run at most this many trials now")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a key path")
    parser.add_argument("--dry-run", action="store_true", help="validate and print the trials; train nothing")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    return parser.parse_args(argv)


MAX_SLUG = 100  # characters of a file or folder name made by ``slug`` (file systems allow 255 bytes)


def slug(name: str) -> str:
    """A file or folder name for any text (study names, plot names): runs of characters other than letters,
    digits and ``_.-`` become ``_``; a name that would be longer than ``MAX_SLUG`` characters (or empty) is
    cut and gets a short hash of the whole text, so that long names stay distinct."""
    clean = re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("._")
    if clean and len(clean) <= MAX_SLUG:
        return clean
    digest = hashlib.sha256(name.encode("utf-8", "surrogatepass")).hexdigest()[:12]
    return f"{clean[: MAX_SLUG - len(digest) - 1]}-{digest}" if clean else digest


def cache_dir() -> Path:
    return Path(os.environ.get("HARNESS_CACHE_DIR") or Path.home() / ".cache" / "simple-diffusion-harness")


def results_dir(storage: str) -> Path:
    """Artifacts go beside a SQLite database, else under ./results (or $HARNESS_RESULTS_DIR)."""
    if os.environ.get("HARNESS_RESULTS_DIR"):
        return Path(os.environ["HARNESS_RESULTS_DIR"])
    path = sqlite_path(storage)
    return path.parent if path is not None else Path("results")


def planned_trials(loaded: LoadedStudy) -> list[dict]:
    """The grid's cells (values by key) in order; empty for tpe/random (sampled while running)."""
    return grid_cells(loaded.dims) if loaded.spec.search.sampler == "grid" else []


def print_dry_run(loaded: LoadedStudy, storage: str) -> None:
    spec = loaded.spec
    cells = planned_trials(loaded)
    objectives = ", ".join(f"{o.metric} ({o.direction})" for o in spec.objectives)
    print(f"study {spec.name!r} from {loaded.path}: sampler {spec.search.sampler}, storage {storage}")
    print(f"objectives: {objectives}")
    if spec.search.sampler != "grid":
        print(f"{spec.search.n_trials} trials sampled by {spec.search.sampler} (seed {spec.seed}) from:")
        for dim in loaded.dims:
            print(f"  {dim.key}: {dim.labels if dim.values is not None else dim.range.model_dump()}")
        print("# base configuration")
        print(yaml.safe_dump(loaded.base, sort_keys=False).rstrip())
        return
    print(f"{len(cells)} trials in the grid")
    for i, cell in enumerate(cells):
        labels = ", ".join(f"{k}={v}" for k, v in cell_labels(loaded.dims, cell).items())
        config = loaded.trial_config(cell)
        kept = fidelity_by_std(config["diffusion"]["schedule"], config["eval"]["sampler"])
        shown = " / ".join(f"{kept[s]:.3f}" for s in FIDELITY_STDS)
        print(f"\n# trial {i}: {labels or '(base configuration)'}")
        print(f"# sampler fidelity (variance kept at s = {', '.join(map(str, FIDELITY_STDS))}): {shown}")
        found = recipe(config)
        print(f"# lr {found['lr']:.3g} ({found['lr_rule']}), warm-up {found['warmup_steps']} ({found['warmup_rule']})")
        print(yaml.safe_dump(config, sort_keys=False).rstrip())


def fidelity_notes(loaded: LoadedStudy) -> list[str]:
    """The sampler-fidelity guard over the study's trials (the base configuration for tpe/random)."""
    cells = planned_trials(loaded) or [{}]
    by_arm = {}
    for cell in cells:
        config = loaded.trial_config(cell)
        arm = {k: v for k, v in cell_labels(loaded.dims, cell).items() if not k.split(".")[-1].endswith("seed")}
        label = ", ".join(f"{k}={v}" for k, v in arm.items()) or "base configuration"
        by_arm[label] = fidelity_by_std(config["diffusion"]["schedule"], config["eval"]["sampler"])[GUARD_STD]
    return [f"sampler fidelity guard: {p}" for p in guard_problems(by_arm)]


def storage_source(flag: str | None, loaded: LoadedStudy, study_file: str) -> str:
    """Where the storage URL came from, for error messages (the order of ``resolve_storage``)."""
    if flag:
        return "--storage"
    if loaded.spec.storage:
        return f"{study_file}: storage"
    return "$HARNESS_STORAGE" if os.environ.get("HARNESS_STORAGE") else "default storage"


def print_notes(loaded: LoadedStudy) -> None:
    """Warnings found while validating (e.g. FID unavailable, the sampler-fidelity guard), printed once the
    input is known to be good."""
    for note in [*loaded.notes, *fidelity_notes(loaded)]:
        print(f"note: {note}", file=sys.stderr)


@cli_main
def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    loaded = load_study(args.study, args.set)
    n_trials = None
    if args.n_trials is not None:
        try:
            n_trials = int(args.n_trials)
        except ValueError:
            n_trials = 0
        if n_trials < 1:
            raise UsageError(f"{args.study}: --n-trials: must be a positive integer, got {args.n_trials!r}")
    if loaded.spec.storage is not None:
        check_storage_url(loaded.spec.storage, f"{args.study}: storage")
    storage = resolve_storage(args.storage, loaded.spec.storage)
    check_storage_url(storage, storage_source(args.storage, loaded, args.study))
    if args.dry_run:
        print_dry_run(loaded, storage)
        print_notes(loaded)
        return 0
    from harness.optimize import run_study

    # the harness prints one line per trial (and failures with their reason); Optuna's own warnings would
    # repeat each failure with a traceback
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    try:
        summary = run_study(loaded, storage, n_trials, progress=not args.quiet)
    except KeyboardInterrupt:
        print("\ninterrupted: completed trials are kept; run the same command again to resume", file=sys.stderr)
        return 130
    print(summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())
