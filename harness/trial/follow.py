"""The ranks > 0 of a torchrun job: train every trial rank 0 sends, until it says stop.

Rank 0 (the Optuna driver) claims a trial and sends its cell's values, its folder and its config's hash;
every other rank builds the same ``TrialConfig`` from the same study file and trains its share of each
batch (``harness.trial.parallel``). Rank 0 alone evaluates and writes; the others wait for the next trial.
"""

from __future__ import annotations

from pathlib import Path

from harness.config import LoadedStudy
from harness.errors import TrialFailed
from harness.trial.parallel import Parallel
from harness.trial.runner import config_hash, run_trial


class RankMismatch(RuntimeError):
    """A rank built another config than rank 0 from the same cell: not the same study file or code."""


def follow(loaded: LoadedStudy, parallel: Parallel, cache_dir: Path) -> int:
    """Train the trials rank 0 sends; returns how many. A trial every rank failed alike (a divergence, a batch
    that does not divide) is rank 0's to record: wait for the next. Anything else ends this process, and
    torchrun ends the job."""
    trained = 0
    while True:
        message = parallel.receive()
        if message[0] == "stop":
            return trained
        _, values, workdir, expected = message
        config = loaded.trial_config(values)
        if config_hash(config) != expected:
            raise RankMismatch(
                f"rank {parallel.rank}: the trial's config differs from rank 0's (hash {config_hash(config)} vs "
                f"{expected}): every machine must run the same study file, --set values and harness version"
            )
        try:
            run_trial(config, Path(workdir), cache_dir, parallel=parallel)
        except TrialFailed:
            if parallel.broken:
                raise
        trained += 1
