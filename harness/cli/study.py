"""``python -m harness.study STUDY.yaml [--storage URL] [--n-trials N] [--set KEY=VALUE ...] [--dry-run]
[--quiet] [--tensorboard]``

Runs (or resumes) a study: Optuna picks the trials, the runner trains and evaluates each, and every result
lands in the study's database beside Optuna's own tables. Rerunning the same command runs only what is
missing; a failed trial is recorded with its reason and the study goes on.

Exit status: 0 when the run is done (some trials may have failed: each is printed with its reason and
counted); 1 when every trial of this run failed; 2 on bad input (one ``error:`` line, nothing written);
130 on Ctrl-C.

``--workers N|auto`` runs N such processes, one per device (``harness.cli.workers``); under ``torchrun`` every
trial is trained by all of the job's processes with DDP (``harness.cli.ranks``).
"""

from __future__ import annotations

import argparse
import gc
import os
import sys

import optuna
import yaml

from harness.cli.common import cli_main
from harness.cli.ranks import check_batch_divides, run_ranks
from harness.cli.workers import Display, plan_workers, run_workers, worker_command
from harness.config import LoadedStudy, load_study
from harness.config.space import cell_labels
from harness.driver import run_study
from harness.driver.console import Console, progress_interval
from harness.errors import UsageError
from harness.metrics.fidelity import FIDELITY_STDS, fidelity_by_std
from harness.store.urls import check_storage_url, resolve_storage
from harness.trial.parallel import torchrun_world
from harness.trial.recipes import recipe


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m harness.study", description=__doc__.split("\n\n")[1])
    parser.add_argument("study", help="the study file (YAML)")
    parser.add_argument("--storage", help="database URL (default: study's storage, $HARNESS_STORAGE, sqlite)")
    parser.add_argument("--n-trials", help="run at most this many trials now")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a key path")
    parser.add_argument("--dry-run", action="store_true", help="validate and print the trials; train nothing")
    parser.add_argument("--quiet", action="store_true", help="only the essential lines: trials, outcomes, summary")
    parser.add_argument(
        "--tensorboard", action="store_true", help="TensorBoard event files per trial (needs the tensorboard package)"
    )
    parser.add_argument("--workers", metavar="N|auto", help="N worker processes, one per device (auto: per GPU/core)")
    return parser.parse_args(argv)


def print_dry_run(loaded: LoadedStudy, storage: str) -> None:
    spec = loaded.spec
    cells = loaded.planned_cells()
    objectives = ", ".join(f"{o.metric} ({o.direction})" for o in spec.objectives)
    print(f"study {spec.name!r} from {loaded.path}: sampler {spec.search.sampler}, storage {storage}")
    print(f"objectives: {objectives}")
    if spec.search.sampler != "grid":
        print(f"{spec.search.n_trials} trials sampled by {spec.search.sampler} (seed {spec.seed}) from:")
        for dim in loaded.dims:
            print(f"  {dim.key}: {dim.labels if dim.values is not None else dim.range.model_dump()}")
        print("# base configuration")
        print(yaml.safe_dump(loaded.base.to_json(), sort_keys=False).rstrip())
        return
    print(f"{len(cells)} trials in the grid")
    for i, cell in enumerate(cells):
        labels = ", ".join(f"{k}={v}" for k, v in cell_labels(loaded.dims, cell).items())
        config = loaded.trial_config(cell)
        kept = fidelity_by_std(config.diffusion.schedule, config.eval.sampler)
        shown = " / ".join(f"{kept[s]:.3f}" for s in FIDELITY_STDS)
        print(f"\n# trial {i}: {labels or '(base configuration)'}")
        print(f"# sampler fidelity (variance kept at s = {', '.join(map(str, FIDELITY_STDS))}): {shown}")
        found = recipe(config)
        print(f"# lr {found.lr:.3g} ({found.lr_rule}), warm-up {found.warmup_steps} ({found.warmup_rule})")
        print(yaml.safe_dump(config.to_json(), sort_keys=False).rstrip())


def storage_source(flag: str | None, loaded: LoadedStudy, study_file: str) -> str:
    """Where the storage URL came from, for error messages (the order of ``resolve_storage``)."""
    if flag:
        return "--storage"
    if loaded.spec.storage:
        return f"{study_file}: storage"
    return "$HARNESS_STORAGE" if os.environ.get("HARNESS_STORAGE") else "default storage"


def print_notes(loaded: LoadedStudy) -> None:
    """Warnings found while validating (e.g. FID unavailable, the sampler-fidelity guard, parameters a
    ``--set`` dropped), printed once the input is known to be good."""
    for note in loaded.notes:
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
    world = torchrun_world()
    if world is not None:
        if args.workers is not None:
            raise UsageError(f"{args.study}: --workers: not under torchrun (its processes already share each trial)")
        check_batch_divides(loaded, world[1])
    plans = plan_workers(args.workers, loaded, n_trials) if args.workers is not None else None
    if args.dry_run:
        if world is None or world[0] == 0:
            print_dry_run(loaded, storage)
            print_notes(loaded)
        if argv is None:  # the command line, about to exit (not a caller in the same process)
            # the interpreter's last garbage collection would walk every object torch made at import: about
            # 0.3 s, a sixth of a dry run; nothing is open or unwritten here, so the exit may skip it
            gc.freeze()
        return 0
    if plans is not None:  # the workers print the notes (the display shows each once)
        return run_workers(plans, worker_command(sys.argv[1:] if argv is None else argv), Display(sys.stdout))
    # the harness prints one line per trial (and failures with their reason); Optuna's own warnings would
    # repeat each failure with a traceback
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    console = Console(quiet=args.quiet, interval_s=progress_interval())  # bars only when stdout is a terminal
    try:
        if world is not None:
            return run_ranks(loaded, storage, n_trials, console, world, tensorboard=args.tensorboard)
        outcome = run_study(loaded, storage, n_trials, console, tensorboard=args.tensorboard)
    except KeyboardInterrupt:
        print("\ninterrupted: completed trials are kept; run the same command again to resume", file=sys.stderr)
        return 130
    print(outcome.summary)
    if outcome.failure:
        print(f"error: {outcome.failure}", file=sys.stderr)
    return outcome.exit_code


if __name__ == "__main__":
    sys.exit(main())
