"""Metrics are a component family: every entry of ``METRICS`` validates from its name, round-trips through its
stored spec, refuses unknown or ill-typed parameters naming the key, and declares the value names it writes.
(``tests/test_contracts.py::test_metric_contract`` runs each one's ``compute`` on a tiny context.)"""

from __future__ import annotations

import json

import pytest

from components.registry import ComponentError, validate_spec
from harness.metrics import METRICS


@pytest.mark.parametrize("name", sorted(METRICS))
def test_metric_builds_from_defaults_and_round_trips(name):
    metric = validate_spec("metric", METRICS, name)
    assert metric.name == name and metric == validate_spec("metric", METRICS, {"name": name})
    stored = json.loads(json.dumps(metric.to_spec()))
    assert set(stored) == {"name", *METRICS[name].model_fields}
    assert validate_spec("metric", METRICS, stored) == metric


@pytest.mark.parametrize("name", sorted(METRICS))
def test_metric_parameters_are_checked(name):
    with pytest.raises(ComponentError) as info:
        validate_spec("metric", METRICS, {"name": name, "no_such_parameter": 1})
    assert info.value.key == "no_such_parameter" and info.value.family == "metric"
    for field in METRICS[name].model_fields:
        with pytest.raises(ComponentError) as info:
            validate_spec("metric", METRICS, {"name": name, field: "not a value"})
        assert info.value.key == field


@pytest.mark.parametrize("name", sorted(METRICS))
@pytest.mark.parametrize("resolution", [16, 32, 64, 256])
def test_metric_declares_the_names_it_writes(name, resolution):
    """``outputs`` (headline first) are written at every resolution; ``output_names`` adds the ones that depend
    on the images; all are stable snake_case."""
    metric = validate_spec("metric", METRICS, name)
    names = metric.output_names(resolution)
    assert metric.outputs and names[: len(metric.outputs)] == metric.outputs
    assert len(set(names)) == len(names) and all(n.isidentifier() and n == n.lower() for n in names)


def test_unknown_metric_lists_the_known_ones():
    with pytest.raises(ComponentError) as info:
        validate_spec("metric", METRICS, "fdi")
    assert info.value.key == "name" and "did you mean 'fid'" in str(info.value)
    assert all(name in str(info.value) for name in METRICS)


def test_swd_names_its_pyramid_levels():
    assert validate_spec("metric", METRICS, "swd").output_names(64) == ("swd", "swd_64", "swd_32", "swd_16")
