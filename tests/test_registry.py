"""Every entry of every registry builds from its defaults; specs validate with errors that name the key.

The parametrisation enumerates ``components.REGISTRIES`` at collection time, so a component added to any
family (stems, networks, datasets included) is tested the day it is added.
"""

from __future__ import annotations

import json
import typing

import pytest

import components
from components import REGISTRIES, ComponentError

# (family, name) of entries that cannot build from defaults alone, with the fields they require
NEEDS_PARAMETERS = {("dataset", "folder"): {"path"}, ("dataset", "array"): {"path"}}

ENTRIES = [(family, name) for family, registry in REGISTRIES.items() for name in sorted(registry)]
FAMILIES = sorted(REGISTRIES)


def required_fields(family: str, name: str) -> set[str]:
    return {k for k, f in REGISTRIES[family][name].model_fields.items() if f.is_required()}


def buildable(family: str, name: str) -> bool:
    return not required_fields(family, name)


def misspell(word: str) -> str:
    return word + word[-1]


def test_families_are_the_documented_ones():
    assert set(REGISTRIES) == {"schedule", "parametrization", "loss", "stem", "network", "sampler", "dataset"}


def test_registries_hold_the_documented_names():
    assert {"cosine", "shifted_cosine", "interpolated_shifted"} <= set(REGISTRIES["schedule"])
    assert {"v", "eps", "x"} <= set(REGISTRIES["parametrization"])
    assert {"mse", "multiscale"} <= set(REGISTRIES["loss"])
    assert {"ancestral", "ddim"} <= set(REGISTRIES["sampler"])


def test_entries_needing_parameters_are_known_few():
    needing = {(f, n): required_fields(f, n) for f, n in ENTRIES if not buildable(f, n)}
    unexpected = {k: v for k, v in needing.items() if NEEDS_PARAMETERS.get(k) != v}
    assert not unexpected, f"entries that do not build from defaults: {unexpected}"


@pytest.mark.parametrize(("family", "name"), ENTRIES)
def test_builds_from_defaults(family, name):
    if not buildable(family, name):
        pytest.skip(f"needs {sorted(required_fields(family, name))}")
    obj = components.build(family, name)
    assert obj is not None
    spec = components.validate(family, name)
    assert spec.name == name


@pytest.mark.parametrize(("family", "name"), ENTRIES)
def test_string_spec_equals_mapping_spec(family, name):
    if not buildable(family, name):
        pytest.skip(f"needs {sorted(required_fields(family, name))}")
    a = components.validate(family, name)
    b = components.validate(family, {"name": name})
    assert a == b
    assert a.to_spec() == b.to_spec()


@pytest.mark.parametrize(("family", "name"), ENTRIES)
def test_to_spec_round_trips(family, name):
    if not buildable(family, name):
        pytest.skip(f"needs {sorted(required_fields(family, name))}")
    spec = components.validate(family, name)
    d = spec.to_spec()
    assert d["name"] == name
    assert set(d) == {"name", *REGISTRIES[family][name].model_fields}
    d2 = json.loads(json.dumps(d))  # JSON-able
    again = components.validate(family, d2)
    assert again == spec and again.to_spec() == d
    components.build(family, d2)
    # a validated spec object is itself an accepted spec
    assert components.validate(family, spec) == spec


@pytest.mark.parametrize("family", FAMILIES)
def test_unknown_name(family):
    with pytest.raises(ComponentError) as info:
        components.build(family, "no_such_component")
    err = info.value
    assert isinstance(err, ValueError)
    assert err.family == family and err.key == "name"
    msg = str(err)
    assert family in msg and "name" in msg and "no_such_component" in msg
    for known in REGISTRIES[family]:
        assert known in msg


@pytest.mark.parametrize(("family", "name"), ENTRIES)
def test_misspelt_name_suggests(family, name):
    with pytest.raises(ComponentError) as info:
        components.build(family, {"name": misspell(name)})
    assert info.value.key == "name"
    assert f"did you mean '{name}'" in str(info.value)


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("spec", [{"steps": 3}, {"name": 3}, 3.0, None])
def test_malformed_spec(family, spec):
    with pytest.raises(ComponentError) as info:
        components.build(family, spec)
    assert info.value.key == "name" and family in str(info.value)


def test_unknown_family():
    with pytest.raises(ComponentError) as info:
        components.build("schedul", "cosine")
    assert info.value.key == "family"
    assert "did you mean 'schedule'" in str(info.value) and "sampler" in str(info.value)


PARAM_ENTRIES = [(f, n) for f, n in ENTRIES if REGISTRIES[f][n].model_fields]


@pytest.mark.parametrize(("family", "name"), PARAM_ENTRIES)
def test_unknown_parameter_names_key_and_suggests(family, name):
    fields = REGISTRIES[family][name].model_fields
    field = sorted(fields, key=len)[-1]  # longest: a unique close match
    params = {k: "x" for k in required_fields(family, name)}
    with pytest.raises(ComponentError) as info:
        components.build(family, {"name": name, **params, misspell(field): 1})
    err = info.value
    assert err.family == family and err.key == misspell(field)
    assert misspell(field) in str(err) and f"did you mean '{field}'" in str(err)


def _accepts_anything(annotation) -> bool:
    return annotation is typing.Any or annotation is object


@pytest.mark.parametrize(("family", "name"), PARAM_ENTRIES)
def test_wrong_type_names_key(family, name):
    cls = REGISTRIES[family][name]
    required = {k: "x" for k in required_fields(family, name)}
    checked = 0
    for field, info in cls.model_fields.items():
        if _accepts_anything(info.annotation):
            continue
        with pytest.raises(ComponentError) as err:
            components.validate(family, {"name": name, **required, field: object()})
        assert err.value.key.split(".")[0] == field, str(err.value)
        assert family in str(err.value) and field in str(err.value)
        checked += 1
    assert checked


@pytest.mark.parametrize(
    ("family", "spec", "key"),
    [
        ("schedule", {"name": "shifted_cosine", "resolution": "abc"}, "resolution"),
        ("schedule", {"name": "shifted_cosine", "resolution": 0}, "resolution"),
        ("schedule", {"name": "shifted_cosine", "clip": "sometimes"}, "clip"),
        ("schedule", {"name": "interpolated_shifted", "orientation": "sideways"}, "orientation"),
        ("schedule", {"name": "cosine", "logsnr_min": 20}, "logsnr_min"),
        ("schedule", {"name": "interpolated_shifted", "logsnr_max": -20}, "logsnr_min"),
        ("loss", {"name": "multiscale", "base": 1.5}, "base"),
        ("loss", {"name": "min_snr", "gamma": -1}, "gamma"),
        ("sampler", {"name": "ddim", "steps": 0}, "steps"),
        ("sampler", {"name": "ancestral", "guidance_scale": -1}, "guidance_scale"),
    ],
)
def test_invalid_values_name_key(family, spec, key):
    with pytest.raises(ComponentError) as info:
        components.build(family, spec)
    assert info.value.key == key
    assert str(info.value).startswith(f"{family}: {key}: ")


def test_specs_are_frozen():
    spec = components.validate("schedule", "cosine")
    with pytest.raises(Exception):  # noqa: B017 - pydantic's frozen error type varies by version
        spec.logsnr_min = 0.0
