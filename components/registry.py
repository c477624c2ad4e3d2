"""The mechanism every component family shares: typed specs, dict-literal registries, clear errors.

A component spec is a pydantic model (unknown keys are errors) that validates its own parameters; the
registry of a family is a dict literal name -> spec class at the end of that family's module. ``build``
turns a user spec (a name, or a mapping with ``name`` plus parameters) into the validated spec and then
into the runtime object (``spec.instantiate()``; for pure-formula components the spec is the object).
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, PrivateAttr, ValidationError


class ComponentError(ValueError):
    """A component spec is wrong. ``key`` is the offending key path inside the spec (e.g. ``name``)."""

    def __init__(self, family: str, key: str, message: str):
        self.family = family
        self.key = key
        self.message = message
        super().__init__(f"{family}: {key}: {message}")


class Component(BaseModel):
    """Base of every component spec: frozen, unknown keys forbidden, parameters typed."""

    # allow_inf_nan=False: inf and nan are never a valid parameter (``1e400`` in YAML is inf)
    model_config = ConfigDict(extra="forbid", frozen=True, arbitrary_types_allowed=True, allow_inf_nan=False)
    _name: str = PrivateAttr(default="")  # the registry key it was built under

    def instantiate(self) -> Any:
        """The runtime object. Pure-formula components are their own runtime object."""
        return self

    @property
    def name(self) -> str:
        return self._name

    def to_spec(self) -> dict[str, Any]:
        """The JSON-able spec this component was built from (``name`` plus every parameter)."""
        return {"name": self._name, **self.model_dump(mode="json")}


def did_you_mean(word: str, choices: list[str]) -> str:
    close = difflib.get_close_matches(str(word), choices, n=1, cutoff=0.6)
    return f"; did you mean '{close[0]}'?" if close else ""


def split_spec(family: str, spec: Any) -> tuple[str, dict[str, Any]]:
    """A spec is a name or a mapping with ``name``; returns (name, parameters)."""
    if isinstance(spec, Component):
        return spec.name, spec.model_dump()
    if isinstance(spec, str):
        return spec, {}
    if isinstance(spec, Mapping):
        if "name" not in spec:
            raise ComponentError(family, "name", "missing; every component spec needs a 'name'")
        name = spec["name"]
        if not isinstance(name, str):
            raise ComponentError(family, "name", f"must be a string, got {type(name).__name__}")
        return name, {k: v for k, v in spec.items() if k != "name"}
    raise ComponentError(family, "name", f"a spec is a name or a mapping, got {type(spec).__name__}")


def format_validation_error(family: str, name: str, cls: type[BaseModel], err: ValidationError) -> ComponentError:
    """The first pydantic error as a ComponentError naming the parameter's key path."""
    first = err.errors()[0]
    path = [str(p) for p in first["loc"]]
    if first["type"] == "extra_forbidden":
        key = ".".join(path)
        fields = sorted(cls.model_fields) if len(path) == 1 else []
        hint = did_you_mean(path[-1], fields)
        known = f" known: {', '.join(fields)}" if fields else ""
        return ComponentError(family, key, f"unknown parameter of '{name}'{hint}{known}")
    msg = first["msg"]
    got = f" (got {first.get('input')!r})" if path else ""  # no loc: the input is the whole spec
    if first["type"] == "value_error":
        # a validator's "Value error, KEY: text" names the key itself (model-level checks have no loc)
        msg = msg.removeprefix("Value error, ")
        head, sep, rest = msg.partition(": ")
        if sep and head.replace(".", "").replace("_", "").isalnum():
            path, msg = [*path, head], rest
    key = ".".join(path) or "(spec)"  # "(spec)": the parameters together, e.g. an inconsistent pair
    return ComponentError(family, key, f"{msg}{got}")


def validate_spec(family: str, registry: Mapping[str, type[Component]], spec: Any) -> Component:
    """Validate ``spec`` against ``registry``; raises ComponentError naming family, key and choices."""
    name, params = split_spec(family, spec)
    if name not in registry:
        known = sorted(registry)
        raise ComponentError(
            family, "name", f"unknown {family} '{name}'{did_you_mean(name, known)} known: {', '.join(known)}"
        )
    cls = registry[name]
    try:
        spec_obj = cls.model_validate(params)
    except ValidationError as err:
        raise format_validation_error(family, name, cls, err) from None
    spec_obj._name = name
    return spec_obj
