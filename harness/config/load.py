"""Load a study file: read it, apply ``--set`` overrides, validate everything, resolve the trial configs.

Every problem is a ``UsageError`` whose one-line message names the file and the key path; nothing here
touches the database or writes files. Every value the search can produce is validated before the first
trial, and so is what the trials need from this machine (datasets, network sizes, device;
``harness.config.preflight``).
"""

from __future__ import annotations

import copy
import json
import math
import warnings
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from components.registry import did_you_mean
from harness import limits
from harness.config.error_messages import format_pydantic
from harness.config.files import read_yaml
from harness.config.models import StudySpec
from harness.config.overrides import apply_overrides
from harness.config.preflight import check_trials
from harness.config.resolver import Resolver
from harness.config.space import Dimension, cell_labels, get_path, grid_cells, set_path
from harness.config.trial import TrialConfig
from harness.errors import UsageError, one_line
from harness.metrics import preflight
from harness.metrics.fidelity import GUARD_STD, fidelity_by_std, guard_problems


class LoadedStudy:
    """A validated study: the spec, its resolved base config, the search dimensions, the file, and the notes
    (warnings) found while validating."""

    def __init__(self, path: Path, spec: StudySpec, base: TrialConfig, dims: list[Dimension], resolver: Resolver):
        self.path, self.spec, self.base, self.dims = path, spec, base, dims
        self.resolver = resolver
        self.notes: list[str] = []

    @property
    def name(self) -> str:
        return self.spec.name

    def trial_config(self, values: dict[str, Any]) -> TrialConfig:
        """The resolved config of one trial: the study's sections with ``values`` (key path -> value) merged in."""
        raw = self.spec.base_config()
        for key, value in values.items():
            set_path(raw, key, copy.deepcopy(value))
        return self.resolver.resolve(raw)

    def planned_cells(self) -> list[dict[str, Any]]:
        """The grid's cells (values by key) in order; empty for tpe/random (sampled while running)."""
        return grid_cells(self.dims) if self.spec.search.sampler == "grid" else []


def load_study(path: str | Path, overrides: list[str] | None = None) -> LoadedStudy:
    """Read, override, validate and resolve a study file (see the module docstring)."""
    path = Path(path)
    data, notes = apply_overrides(read_yaml(path), overrides or [], path)
    try:
        spec = StudySpec.model_validate(data)
    except ValidationError as err:
        key, msg = format_pydantic(err, StudySpec)
        raise UsageError(f"{path}: {key}: {msg}") from None
    resolver = Resolver()
    try:
        base = resolver.resolve(spec.base_config())
    except UsageError as err:
        raise UsageError(f"{path}: {err}") from None
    loaded = LoadedStudy(path, spec, base, [], resolver)
    loaded.dims, configs = _check_search(loaded)
    notes += _check_objectives(loaded, configs)
    check_trials(path, configs)
    loaded.notes = notes + fidelity_notes(loaded)
    return loaded


def _check_search(loaded: LoadedStudy) -> tuple[list[Dimension], list[TrialConfig]]:
    """The search dimensions, and the resolved configs of every grid cell (tpe/random: of the base and of
    each probe value); every one of them is validated here."""
    path, spec = loaded.path, loaded.spec
    base = loaded.base.to_json()  # key paths are the study file's: the resolved config's JSON has them all
    dims = []
    for key, values in spec.search.space.items():
        where = f"{path}: search.space.{key}"
        try:
            get_path(base, key)
        except KeyError:
            raise UsageError(f"{where}: the key is not in the base config (search keys must exist there)") from None
        if isinstance(values, list) and not values:
            raise UsageError(f"{where}: empty list of values")
        try:
            dim = Dimension(key, values)
            if spec.search.sampler == "grid":
                dim.check_grid()
        except ValueError as err:
            raise UsageError(f"{where}: {err}") from None
        dims.append(dim)
    if spec.search.sampler != "grid" and spec.search.n_trials is None:
        raise UsageError(f"{path}: search.n_trials: required for the {spec.search.sampler} sampler")
    limits.check("trials", spec.search.n_trials, f"{path}: search.n_trials")
    loaded.dims = dims
    configs = [loaded.base]
    for dim in dims:
        for value in dim.probe_values():
            try:
                configs.append(loaded.trial_config({dim.key: value}))
            except UsageError as err:
                shown = json.dumps(value, default=str)
                raise UsageError(f"{path}: search.space.{dim.key}: value {shown} is invalid: {err}") from None
    if spec.search.sampler == "grid":
        cells = math.prod(dim.size() for dim in dims)
        limits.check("trials", cells, f"{path}: search.space (grid cells, the product of the axes' sizes)")
        configs = []
        for cell in grid_cells(dims):
            try:
                configs.append(loaded.trial_config(cell))
            except UsageError as err:
                raise UsageError(
                    f"{path}: search.space: the combination {json.dumps(cell)} is invalid: {err}"
                ) from None
    return dims, configs


def _check_objectives(loaded: LoadedStudy, configs: list[TrialConfig]) -> list[str]:
    """Every objective must be produced by the enabled metrics of every trial (each metric declares the names
    it writes, per-level ones included); FID/KID objectives need weights. Returns the notes the metrics'
    preflight raised as warnings (e.g. FID will be unavailable)."""
    path, spec, base = loaded.path, loaded.spec, loaded.base
    for config in configs:
        produced = {"val_loss", "train_loss"}
        for metric in config.eval.metrics:
            produced |= set(metric.output_names(config.resolution))
        for i, obj in enumerate(spec.objectives):
            if obj.metric not in produced:
                known = sorted(produced)
                raise UsageError(
                    f"{path}: objectives.{i}.metric: {obj.metric!r} is not produced by eval.metrics"
                    f"{did_you_mean(obj.metric, known)} produced: {', '.join(known)}"
                )
    names = [m.name for m in base.eval.metrics]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            preflight(names, base.eval.fid, [o.metric for o in spec.objectives])
        except ValueError as err:
            raise UsageError(f"{path}: objectives: {err}") from None
    return [one_line(str(w.message)) for w in caught]


def fidelity_by_arm(loaded: LoadedStudy) -> dict[str, float]:
    """{arm label: the variance its evaluation sampler keeps at s = GUARD_STD} over the study's trials (the
    base configuration for tpe/random); an arm is a cell without its seed axes."""
    by_arm = {}
    for cell in loaded.planned_cells() or [{}]:
        config = loaded.trial_config(cell)
        arm = {k: v for k, v in cell_labels(loaded.dims, cell).items() if not k.split(".")[-1].endswith("seed")}
        label = ", ".join(f"{k}={v}" for k, v in arm.items()) or "base configuration"
        by_arm[label] = fidelity_by_std(config.diffusion.schedule, config.eval.sampler)[GUARD_STD]
    return by_arm


def fidelity_notes(loaded: LoadedStudy) -> list[str]:
    """The sampler-fidelity guard's problems over the study's arms (empty when it holds)."""
    return [f"sampler fidelity guard: {p}" for p in guard_problems(fidelity_by_arm(loaded))]
