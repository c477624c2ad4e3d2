"""Study files: read, override (``--set``), validate and resolve into typed, frozen ``TrialConfig``s.

``load_study(path, overrides)`` is the entry point; ``LoadedStudy.trial_config(values)`` resolves one trial.
"""

from harness.config.load import LoadedStudy, fidelity_notes, load_study
from harness.config.models import StudySpec, TrialSpec
from harness.config.resolver import Resolver, resolve
from harness.config.trial import TrialConfig

__all__ = [
    "LoadedStudy",
    "Resolver",
    "StudySpec",
    "TrialConfig",
    "TrialSpec",
    "fidelity_notes",
    "load_study",
    "resolve",
]
