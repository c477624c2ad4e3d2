"""``TrialConfig``: one trial, validated and resolved, typed and frozen, from ``load_study`` to the training
loop, the runner and the metrics.

Every component is its validated spec (a frozen ``Component``: its fields are its parameters, and pure-formula
components are their own runtime objects), so the trial runner reads ``config.train.holdout_fraction`` and
``config.diffusion.schedule``, never string keys. ``to_json()`` is the one place it becomes plain data: the
resolved config as the database stores it (``config_json``) and ``--dry-run`` prints it, with every parameter
spelled out (the network's preset values too) and ``eval.metrics`` as names, or ``{name, ...}`` for a metric
whose parameters differ from its defaults.
"""

from __future__ import annotations

import json
from typing import Any

from pydantic import BaseModel, ConfigDict

from components.losses import Loss
from components.networks.spec import NetworkSpec
from components.registry import Component
from components.schedules import Schedule
from harness.config.models import EvalSpec, Seed, TrainSpec
from harness.metrics import FidOptions, Metric


class Resolved(BaseModel):
    """A frozen record of validated parts (unknown keys forbidden)."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, arbitrary_types_allowed=True)


class Diffusion(Resolved):
    schedule: Schedule  # logSNR(t), with the dataset's resolution filled in for shifted schedules
    parametrization: Component  # what the network predicts (v, eps, x)
    loss: Loss  # per-example loss on eps


class Evaluation(EvalSpec):
    """The ``eval`` section with its sampler, metrics and FID options validated."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    sampler: Component  # the evaluation sampler (steps, spacing, ...)
    metrics: tuple[Metric, ...]  # in file order, each once
    fid: FidOptions  # options of FID/KID (mode, weights, num_reference, batch_size)


def metric_entry(metric: Metric) -> str | dict[str, Any]:
    """A metric as ``eval.metrics`` stores it: its name, or its full spec when a parameter differs from the
    default (two spellings of the same metric store the same entry)."""
    return metric.to_spec() if metric.model_dump(exclude_defaults=True) else metric.name


class TrialConfig(Resolved):
    """Everything one trial needs, resolved (the search space merged in, defaults filled in)."""

    name: str  # the study's name
    storage: str | None  # the study file's storage URL (not part of the trial's identity)
    seed: Seed  # study seed: data split, search sampler, base of the trial seed
    dataset: Component  # the dataset spec (``instantiate()`` loads it)
    model: NetworkSpec  # the network spec (preset, overrides, stem, dropout)
    diffusion: Diffusion
    train: TrainSpec
    eval: Evaluation

    @property
    def resolution(self) -> int:
        """The image side, pixels (every dataset has one)."""
        return self.dataset.resolution

    def to_json(self) -> dict[str, Any]:
        """The resolved config as plain JSON data: what the database stores and ``--dry-run`` prints."""
        model = {**self.model.to_spec(), **_plain(self.model.config())}  # the preset's values spelled out
        diffusion = {key: getattr(self.diffusion, key).to_spec() for key in Diffusion.model_fields}
        special = {
            "sampler": self.eval.sampler.to_spec(),
            "metrics": [metric_entry(m) for m in self.eval.metrics],
            "fid": self.eval.fid.model_dump(mode="json"),
        }
        evaluation = {key: special.get(key, getattr(self.eval, key)) for key in EvalSpec.model_fields}
        return {
            "name": self.name,
            "storage": self.storage,
            "seed": self.seed,
            "dataset": self.dataset.to_spec(),
            "model": model,
            "diffusion": diffusion,
            "train": self.train.model_dump(mode="json"),
            "eval": _plain(evaluation),
        }


def _plain(data: Any) -> Any:
    """Tuples as lists, as JSON has them."""
    return json.loads(json.dumps(data))
