"""Pure, interchangeable parts of a diffusion model. ``build(family, spec)`` is the one entry point.

Families: schedule, parametrization, loss, stem, network, sampler, dataset. A spec is a name or a mapping
with ``name`` plus that component's parameters. Components never import the harness.
"""

from __future__ import annotations

from typing import Any

from components.datasets import DATASETS
from components.losses import LOSSES
from components.networks import NETWORKS
from components.parametrizations import PARAMETRIZATIONS
from components.registry import Component, ComponentError, did_you_mean, validate_spec
from components.samplers import SAMPLERS
from components.schedules import SCHEDULES
from components.stems import STEMS

REGISTRIES = {
    "schedule": SCHEDULES,
    "parametrization": PARAMETRIZATIONS,
    "loss": LOSSES,
    "stem": STEMS,
    "network": NETWORKS,
    "sampler": SAMPLERS,
    "dataset": DATASETS,
}


def validate(family: str, spec: Any) -> Component:
    """The validated spec (a frozen pydantic model) of ``spec`` in ``family``."""
    if family not in REGISTRIES:
        known = sorted(REGISTRIES)
        raise ComponentError(
            "component", "family", f"unknown family '{family}'{did_you_mean(family, known)} known: {', '.join(known)}"
        )
    return validate_spec(family, REGISTRIES[family], spec)


def build(family: str, spec: Any) -> Any:
    """The runtime object for ``spec`` in ``family`` (a module for stems, networks and datasets)."""
    return validate(family, spec).instantiate()


__all__ = ["REGISTRIES", "Component", "ComponentError", "build", "validate"]
