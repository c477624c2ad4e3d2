"""How validation errors read: the first pydantic error as (key path, message), one line, unknown keys with a
guess and the known keys; a component's error with its section's key path (``diffusion.schedule.base``)."""

from __future__ import annotations

import json

from pydantic import BaseModel, ValidationError

from components.registry import ComponentError, did_you_mean
from harness.errors import UsageError

_UNION_TAGS = ("str", "dict[str,any]", "list[any]", "RangeSpec", "int", "float", "bool", "none")


def _fields_at(model: type[BaseModel], loc: tuple) -> list[str]:
    for part in loc[:-1]:
        field = model.model_fields.get(str(part))
        ann = getattr(field, "annotation", None)
        if not (isinstance(ann, type) and issubclass(ann, BaseModel)):
            return []
        model = ann
    return sorted(model.model_fields)


def format_pydantic(err: ValidationError, model: type[BaseModel]) -> tuple[str, str]:
    """(key path, message) of the first error; union alternatives for one key are joined with 'or'."""
    errors = err.errors()

    def clean(loc: tuple) -> tuple:
        return tuple(p for p in loc if not (isinstance(p, str) and (p in _UNION_TAGS or "[" in p)))

    first_loc = clean(errors[0]["loc"])
    # a union alternative that matched the value's type and failed inside it says the most (a range's bad
    # "high", rather than "not a list")
    deeper = [
        e for e in errors if len(clean(e["loc"])) > len(first_loc) and clean(e["loc"])[: len(first_loc)] == first_loc
    ]
    if deeper:
        errors = deeper + [e for e in errors if e not in deeper]
        first_loc = clean(errors[0]["loc"])
    same = [e for e in errors if clean(e["loc"]) == first_loc]
    key = ".".join(str(p) for p in first_loc) or "(top level)"
    if errors[0]["type"] == "extra_forbidden":
        known = _fields_at(model, first_loc)
        hint = did_you_mean(str(first_loc[-1]), known)
        return key, f"unknown key{hint}" + (f" known: {', '.join(known)}" if known else "")
    if errors[0]["type"] == "missing":
        return key, "required key is missing"
    msgs = " or ".join(dict.fromkeys(e["msg"] for e in same))
    got = errors[0].get("input")
    return key, f"{msgs} (got {json.dumps(got, default=str)[:80]})"


def component_error(section: str, err: ComponentError) -> UsageError:
    """A component's error with its key path inside the study file (``section`` is where the spec sits)."""
    key, msg = err.key, err.message
    if msg.startswith("Value error, "):
        msg = msg[len("Value error, ") :]
        head, sep, rest = msg.partition(": ")
        if sep and head.replace(".", "").replace("_", "").isalnum():
            key, msg = f"{key}.{head}", rest
    return UsageError(f"{section}.{key}: {msg}" if key != "(spec)" else f"{section}: {msg}")
