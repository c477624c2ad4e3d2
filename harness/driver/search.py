"""The search space as Optuna sees it: the sampler, what Optuna records for an axis, and a trial's suggestion.

The axes themselves (values, ranges, labels, grid cells) are the study file's (``harness.config.space``).
"""

from __future__ import annotations

from typing import Any

import optuna

from harness.config.models import SearchSpec
from harness.config.space import Dimension


def make_sampler(search: SearchSpec, seed: int) -> optuna.samplers.BaseSampler:
    if search.sampler == "grid":
        # every cell is enqueued with fixed parameters (``harness.driver.queue``), so the sampler never
        # chooses; Optuna's GridSampler would pick cells itself and repeat failed ones within one run
        return optuna.samplers.RandomSampler(seed=seed)
    if search.sampler == "tpe":
        return optuna.samplers.TPESampler(seed=seed)
    return optuna.samplers.RandomSampler(seed=seed)


def distribution(dim: Dimension, grid: bool = False) -> optuna.distributions.BaseDistribution:
    """What Optuna records for this axis. In a grid (every trial enqueued with fixed values) a numeric axis is
    an int/float range over its values, so that the axis can grow later (Optuna forbids changing a
    categorical's choices within a study)."""
    D = optuna.distributions
    if grid and dim.numeric:
        low, high = min(dim.values), max(dim.values)
        if all(isinstance(v, int) for v in dim.values):
            return D.IntDistribution(low, high)
        return D.FloatDistribution(float(low), float(high))
    if dim.values is not None:
        return D.CategoricalDistribution(dim.labels)
    assert dim.range is not None
    r = dim.range
    if r.is_int:
        return D.IntDistribution(int(r.low), int(r.high), step=int(r.step or 1), log=r.log)
    return D.FloatDistribution(r.low, r.high, step=r.step, log=r.log)


def suggest(dim: Dimension, trial: optuna.Trial, grid: bool = False) -> Any:
    """The Optuna parameter (a label or a number) of this axis for ``trial``."""
    dist = distribution(dim, grid)
    if isinstance(dist, optuna.distributions.CategoricalDistribution):
        return trial.suggest_categorical(dim.key, dist.choices)
    if isinstance(dist, optuna.distributions.IntDistribution):
        return trial.suggest_int(dim.key, dist.low, dist.high, step=dist.step, log=dist.log)
    return trial.suggest_float(dim.key, dist.low, dist.high, step=dist.step, log=dist.log)
