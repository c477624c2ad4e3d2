"""The Optuna driver: open the study, claim grid cells, recover dead workers' trials, and call the trial runner
from the objective (``run.run_study`` is the entry point)."""

from harness.driver.run import run_study

__all__ = ["run_study"]
