"""``torchrun --nproc-per-node K -m harness.study STUDY.yaml``: every trial trained by K processes with DDP.

Rank 0 is the Optuna driver (it opens the study, claims each trial, evaluates it and writes it, exactly as
one process does) and sends each claimed trial to the other ranks, which train it with it
(``harness.trial.follow``); at the end it tells them to stop. Bad input stops every rank before they join
the job (exit 2, the same line on each). When the ranks fall out of step (a failure that only some saw),
rank 0 records the trial failed and exits 1; torchrun then ends the others, and a rerun resumes.
"""

from __future__ import annotations

import contextlib
import sys

from harness.config import LoadedStudy
from harness.driver import run_study
from harness.driver.console import Console
from harness.errors import UsageError
from harness.paths import cache_dir
from harness.safe_text import terminal_safe
from harness.trial.follow import follow
from harness.trial.parallel import init_parallel
from harness.trial.runner import pick_device


def check_batch_divides(loaded: LoadedStudy, world_size: int) -> None:
    """Every planned trial's ``train.batch_size`` divides over the job's processes (a tpe/random trial that
    samples another batch is checked when it starts, and fails alone)."""
    searched = "train.batch_size" in loaded.spec.search.space
    cells = loaded.planned_cells()
    if not cells and searched:
        return
    for config in [loaded.trial_config(cell) for cell in cells] if cells else [loaded.base]:
        batch = config.train.batch_size
        if batch % world_size:
            key = "search.space.train.batch_size" if searched else "train.batch_size"
            raise UsageError(
                f"{loaded.path}: {key}: {batch} does not divide over the {world_size} processes of this torchrun "
                f"job (per-device batch {batch / world_size:g}); use a multiple of {world_size}"
            )


def run_ranks(
    loaded: LoadedStudy,
    storage: str,
    n_trials: int | None,
    console: Console,
    world: tuple[int, int, int],
    tensorboard: bool = False,
) -> int:
    """Run the study as rank ``world[0]`` of ``world[1]`` processes; returns the exit code."""
    rank, world_size, local_rank = world
    parallel = init_parallel(rank, world_size, local_rank, pick_device(loaded.base.train.device).type)
    if rank != 0:
        follow(loaded, parallel, cache_dir())
        parallel.close()
        return 0
    try:
        outcome = run_study(loaded, storage, n_trials, console, tensorboard=tensorboard, parallel=parallel)
    finally:
        if not parallel.broken:  # the other ranks wait for the next trial: tell them there is none
            with contextlib.suppress(Exception):  # a rank that is gone already (Ctrl-C) needs no message
                parallel.send(("stop",))
    if parallel.broken:
        print(
            f"error: torchrun job: the ranks fell out of step ({terminal_safe(parallel.broken)[:300]}); the trial "
            "is recorded failed and the job stops; run the same command again to resume",
            file=sys.stderr,
        )
        return 1
    parallel.close()
    print(outcome.summary)
    if outcome.failure:
        print(f"error: {outcome.failure}", file=sys.stderr)
    return outcome.exit_code
