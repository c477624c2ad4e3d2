"""How a searched value is named wherever people read it (Optuna's choices, the database, reports): a readable,
stable scalar. A core module without torch, so the readers share the rule without loading the config layer."""

from __future__ import annotations

import json
from typing import Any


def label(value: Any) -> str | int | float | bool | None:
    """A readable, stable scalar for a value: scalars as they are, a spec as ``name(k=v, ...)``."""
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, dict) and isinstance(value.get("name"), str):
        args = ", ".join(f"{k}={json.dumps(v, sort_keys=True)}" for k, v in value.items() if k != "name")
        return f"{value['name']}({args})" if args else value["name"]
    return json.dumps(value, sort_keys=True)
