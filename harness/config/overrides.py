"""``--set KEY=VALUE``: change a study file from the command line, and say so when it cannot do what it says.

- VALUE is YAML (``--set train.steps=1000``, ``--set 'eval.sampler={name: ddim, steps: 64}'``);
  ``search.space.<dotted key>=[...]`` sets a search axis (its key keeps its dots).
- Replacing a component's name (``--set diffusion.schedule.name=shifted_cosine``) replaces the component: the
  old one's parameters from the file are dropped (a note names them), parameters given with ``--set`` for that
  component are kept, so ``--set X.name=a --set X.p=1`` and ``--set X.p=1 --set X.name=a`` agree.
- A ``--set`` on a key that a search axis sets in every trial (the axis' key, or a key inside it) would be
  overridden silently: it is an error naming the axis.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

from harness.config.files import parse_yaml
from harness.config.space import get_path, set_path
from harness.errors import UsageError

SPACE = "search.space."


def apply_overrides(data: dict[str, Any], overrides: list[str], path: Path) -> tuple[dict[str, Any], list[str]]:
    """The study file's data with ``overrides`` applied, and notes for the user (dropped parameters)."""
    data = copy.deepcopy(data)
    notes: list[str] = []
    given: list[str] = []  # keys set by --set, in order (not search.space.*)
    for item in overrides:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key or any(not p for p in key.split(".")):
            raise UsageError(f"{path}: --set {item!r}: expected KEY=VALUE with a dotted key path")
        value = parse_yaml(raw, f"{path}: --set {key}") if raw.strip() else None
        if key.startswith(SPACE):
            space = data.setdefault("search", {}).setdefault("space", {})
            if not isinstance(space, dict):
                raise UsageError(f"{path}: --set {key}: search.space is not a mapping")
            space[key[len(SPACE) :]] = value
            continue
        if key.endswith(".name"):
            dropped = _replace_component(data, key[: -len(".name")], value, given)
            if dropped:
                notes.append(
                    f"--set {key}={raw.strip()}: the new component starts from its defaults; dropped the file's "
                    f"{', '.join(dropped)} (set the new one's parameters with --set {key[: -len('.name')]}.KEY=VALUE)"
                )
        set_path(data, key, value)
        given.append(key)
    _check_not_searched(data, given, path)
    return data, notes


def _replace_component(data: dict[str, Any], where: str, name: Any, given: list[str]) -> list[str]:
    """When the component spec at ``where`` gets another name, start it afresh: keep only the parameters that
    earlier ``--set``s gave it. Returns the dropped parameter names (as key paths)."""
    try:
        old = get_path(data, where)
    except KeyError:
        return []
    if not isinstance(old, dict) or "name" not in old or old["name"] == name:
        return []
    kept = {k: v for k, v in old.items() if k != "name" and f"{where}.{k}" in given}
    dropped = [f"{where}.{k}" for k in old if k != "name" and k not in kept]
    set_path(data, where, {"name": name, **kept})
    return dropped


def _check_not_searched(data: dict[str, Any], given: list[str], path: Path) -> None:
    """A --set key that a search axis sets in every trial (the axis itself or a key inside it) is an error."""
    space = data.get("search", {}).get("space") if isinstance(data.get("search"), dict) else None
    if not isinstance(space, dict):
        return
    for key in given:
        for axis in space:
            if key == axis or key.startswith(f"{axis}."):
                raise UsageError(
                    f"{path}: --set {key}: search.space.{axis} sets this key in every trial, so the --set would "
                    f"be overridden; change the axis instead (--set 'search.space.{axis}=[...]')"
                )
