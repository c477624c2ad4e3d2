"""Resolve one trial's sections (a ``TrialSpec``, as written) into a typed ``TrialConfig``.

Every component spec is validated through its registry (``components.REGISTRIES``, and ``METRICS`` for the
entries of ``eval.metrics``) with the parameters the user left out filled in where the trial knows them (the
dataset's resolution reaches a shifted schedule and the network). A ``Resolver`` validates each distinct spec
once (keyed by its JSON): a study's grid cells share most of their components. Every problem is a
``UsageError`` naming the key path (without the file name, which the caller adds).
"""

from __future__ import annotations

import json
from typing import Any

from pydantic import ValidationError

import components
from components.registry import Component, ComponentError, validate_spec
from harness import limits
from harness.config.error_messages import component_error, format_pydantic
from harness.config.models import TrialSpec
from harness.config.trial import Diffusion, Evaluation, TrialConfig, metric_entry
from harness.errors import UsageError
from harness.metrics import METRICS, FidOptions, Metric

REGISTRIES = {**components.REGISTRIES, "metric": METRICS}


class Resolver:
    """Validates component specs, each distinct (family, spec) once; its results are frozen, so shared."""

    def __init__(self) -> None:
        self._validated: dict[tuple[str, str], Component] = {}
        self.validations = 0  # specs validated (not found in the cache): for tests and bench/validations.py

    def component(self, section: str, family: str, spec: Any, defaults: dict[str, Any] | None = None) -> Component:
        """The validated spec of ``spec`` in ``family``; errors name ``section`` (the key path of the spec)."""
        filled = _fill(spec, family, defaults or {})
        key = (family, json.dumps(filled, sort_keys=True))
        if key not in self._validated:
            try:
                self._validated[key] = validate_spec(family, REGISTRIES[family], filled)
            except ComponentError as err:
                raise component_error(section, err) from None
            self.validations += 1
        return self._validated[key]

    def resolve(self, raw: dict[str, Any]) -> TrialConfig:
        """Validate a trial's sections and resolve every component (UsageError without the file name)."""
        try:
            spec = TrialSpec.model_validate(raw)
        except ValidationError as err:
            key, msg = format_pydantic(err, TrialSpec)
            raise UsageError(f"{key}: {msg}") from None
        data = spec.model_dump(mode="json")
        limits.check_config(data)  # before anything is built from the values (again below, defaults filled in)
        dataset = self.component("dataset", "dataset", data["dataset"])
        sized = {"resolution": dataset.resolution}
        ev = data["eval"]
        config = TrialConfig(
            name=spec.name,
            storage=spec.storage,
            seed=spec.seed,
            dataset=dataset,
            model=self.component("model", "network", data["model"], sized),
            diffusion=Diffusion(
                schedule=self.component("diffusion.schedule", "schedule", data["diffusion"]["schedule"], sized),
                parametrization=self.component(
                    "diffusion.parametrization", "parametrization", data["diffusion"]["parametrization"]
                ),
                loss=self.component("diffusion.loss", "loss", data["diffusion"]["loss"]),
            ),
            train=spec.train,
            eval=Evaluation(
                **{k: v for k, v in spec.eval.model_dump().items() if k not in ("sampler", "metrics", "fid")},
                sampler=self.component("eval.sampler", "sampler", ev["sampler"]),
                metrics=self.metrics(ev["metrics"]),
                fid=_fid_options(ev["fid"]),
            ),
        )
        limits.check_config(config)
        return config

    def metrics(self, entries: list[Any]) -> tuple[Metric, ...]:
        """``eval.metrics``: names or ``{name, ...params}``, each validated like a component; the same metric
        listed twice counts once, the same name with other parameters is an error (both write its values)."""
        out: dict[str, Metric] = {}
        for i, entry in enumerate(entries):
            metric = self.component(f"eval.metrics.{i}", "metric", entry)
            if metric.name in out and metric_entry(out[metric.name]) != metric_entry(metric):
                raise UsageError(
                    f"eval.metrics.{i}: metric {metric.name!r} is listed twice with different parameters "
                    "(both would write the same values); keep one"
                )
            out.setdefault(metric.name, metric)
        return tuple(out.values())


def resolve(raw: dict[str, Any], resolver: Resolver | None = None) -> TrialConfig:
    """One trial's sections (a mapping, as a study file writes them) as a ``TrialConfig``."""
    return (resolver or Resolver()).resolve(raw)


def _fill(spec: Any, family: str, defaults: dict[str, Any]) -> Any:
    """The spec as a mapping, with ``defaults`` added for parameters the component has but the user left
    out (e.g. the dataset's resolution for a schedule). Anything else is left for validation to refuse."""
    if not isinstance(spec, str | dict):
        return spec
    mapping = {"name": spec} if isinstance(spec, str) else dict(spec)
    cls = REGISTRIES[family].get(mapping.get("name"))
    if cls is not None:
        for key, value in defaults.items():
            if key in cls.model_fields and key not in mapping:
                mapping[key] = value
    return mapping


def _fid_options(raw: dict[str, Any]) -> FidOptions:
    try:
        return FidOptions.model_validate(raw)
    except ValidationError as err:
        key, msg = format_pydantic(err, FidOptions)
        raise UsageError(f"eval.fid.{key}: {msg}") from None
