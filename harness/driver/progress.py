"""The study's progress in one line, its summary and its exit status.

A line as each trial starts: ``progress: 3 of 6 trials complete, 1 running, 1 failed in this run; elapsed
2m10s, ETA 1m20s``. Complete and running are the study's (every worker's, from the harness tables), out of the
planned total (the grid's cells, or ``search.n_trials``); failed counts this run's trials; the ETA is this run's
trials still to run times the mean duration of its complete trials.

The outcome of a run counts its trials as Optuna ended them (``finished``, called after each trial): complete,
failed, skipped (a grid cell another worker holds). A run whose every trial failed exits with ``EXIT_ALL_FAILED``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from optuna.trial import FrozenTrial, TrialState

EXIT_ALL_FAILED = 1  # harness.study's exit status when every trial of the run failed (2: bad input, 130: Ctrl-C)


def duration_text(seconds: float) -> str:
    """``42s``, ``4m05s``, ``2h03m``."""
    s = max(0, round(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


@dataclass
class StudyProgress:
    """This run's trials as they end, and the clock since the run started."""

    name: str
    planned: int  # trials of the study in all (grid cells, or search.n_trials)
    todo: int  # trials this run means to run
    clock: Callable[[], float] = time.monotonic
    complete: int = 0
    failed: int = 0
    skipped: int = 0
    durations: list[float] = field(default_factory=list)  # seconds, of this run's complete trials
    failures: list[str] = field(default_factory=list)  # ``trial N: reason``, in order
    started: float = field(init=False)

    def __post_init__(self) -> None:
        self.started = self.clock()

    def finished(self, trial: FrozenTrial) -> None:
        """Count a trial of this run as Optuna ended it (a failure's reason: the objective's ``error`` attr)."""
        if trial.state == TrialState.COMPLETE:
            self.complete += 1
            if trial.duration is not None:
                self.durations.append(trial.duration.total_seconds())
        elif trial.state == TrialState.PRUNED:
            self.skipped += 1
        elif trial.state == TrialState.FAIL:
            self.failed += 1
            reason = trial.user_attrs.get("error") or "failed by Optuna after the objective returned"
            self.failures.append(f"trial {trial.number}: {reason}")

    def eta_s(self) -> float | None:
        """Seconds left for this run's remaining trials at the mean duration of its complete ones."""
        if not self.durations:
            return None
        left = max(0, self.todo - self.complete - self.failed)
        return left * sum(self.durations) / len(self.durations)

    def line(self, complete_in_study: int, running_in_study: int) -> str:
        eta = self.eta_s()
        return (
            f"progress: {complete_in_study} of {self.planned} trials complete, {running_in_study} running, "
            f"{self.failed} failed in this run; elapsed {duration_text(self.clock() - self.started)}, "
            f"ETA {duration_text(eta) if eta is not None else 'after the first complete trial'}"
        )

    @property
    def all_failed(self) -> bool:
        """Every trial this run ran failed (skipped duplicates do not count)."""
        return self.failed > 0 and self.complete == 0

    @property
    def exit_code(self) -> int:
        return EXIT_ALL_FAILED if self.all_failed else 0

    def counts_text(self) -> str:
        skipped = f", {self.skipped} skipped (cells other workers hold)" if self.skipped else ""
        return f"{self.complete} complete, {self.failed} failed{skipped}"
