"""The search space: dotted key paths -> a list of values or a range; labels, grid cells, suggestions.

Values may be component specs (mappings); Optuna's categorical choices must be scalars, so each value is
represented by a readable label (``shifted_cosine(base_resolution=32)``) and decoded when merged. What Optuna
records for an axis, and how a trial suggests it, is the driver's (``harness.driver.search``).
"""

from __future__ import annotations

import itertools
import math
import sys
from typing import Any

from harness.config.models import RangeSpec
from harness.labels import label

__all__ = ["Dimension", "cell_labels", "get_path", "grid_cells", "label", "set_path"]


def get_path(config: dict, key: str) -> Any:
    node: Any = config
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            raise KeyError(key)
        node = node[part]
    return node


def set_path(config: dict, key: str, value: Any) -> None:
    """Set ``a.b.c`` in nested dicts, creating mappings on the way; a string component spec on the way
    becomes ``{"name": spec}`` so a parameter can be set on it."""
    parts = key.split(".")
    node = config
    for part in parts[:-1]:
        child = node.get(part)
        if isinstance(child, str):
            child = {"name": child}
        elif not isinstance(child, dict):
            child = {}
        node[part] = child
        node = child
    node[parts[-1]] = value


class Dimension:
    """One searched key: its values (lists) or its range, and the labels Optuna sees."""

    def __init__(self, key: str, spec: list[Any] | RangeSpec):
        self.key = key
        self.range = spec if isinstance(spec, RangeSpec) else None
        self.values = list(spec) if isinstance(spec, list) else None
        if self.values is not None:
            self.labels = [label(v) for v in self.values]
            if len(set(map(repr, self.labels))) != len(self.labels):
                raise ValueError("values repeat")

    def check_grid(self) -> None:
        """A grid axis is a list of values or a linear range with a step (ValueError otherwise)."""
        if self.range is not None and self.range.step is None:
            raise ValueError("a grid needs a list of values or a range with 'step'")
        if self.range is not None and self.range.log:
            raise ValueError("a grid cannot use a log range; list the values")

    def size(self) -> int:
        """How many values a grid axis has, computed without listing them (a range may hold 10^12)."""
        self.check_grid()
        if self.values is not None:
            return len(self.values)
        assert self.range is not None and self.range.step is not None
        steps = (self.range.high - self.range.low) / self.range.step
        return int(round(steps)) + 1 if math.isfinite(steps) else sys.maxsize

    def grid_values(self) -> list[Any]:
        """Every value of a grid axis; a range needs a step."""
        if self.values is not None:
            return self.values
        assert self.range is not None
        vals = [self.range.low + i * self.range.step for i in range(self.size())]
        return [int(round(v)) for v in vals] if self.range.is_int else vals

    def probe_values(self) -> list[Any]:
        """Values to validate before the first trial: every listed value, or a range's endpoints."""
        if self.values is not None:
            return self.values
        assert self.range is not None
        ends = [self.range.low, self.range.high]
        return [int(v) for v in ends] if self.range.is_int else ends

    def decode(self, label_value: Any) -> Any:
        if self.values is None:
            return label_value
        return self.values[[repr(x) for x in self.labels].index(repr(label_value))]

    @property
    def numeric(self) -> bool:
        return self.values is not None and all(
            isinstance(v, int | float) and not isinstance(v, bool) for v in self.values
        )


def grid_cells(dims: list[Dimension]) -> list[dict[str, Any]]:
    """Every combination, in file order (last key varies fastest): [{key: value}, ...]."""
    axes = [d.grid_values() for d in dims]
    return [dict(zip([d.key for d in dims], combo, strict=True)) for combo in itertools.product(*axes)]


def cell_labels(dims: list[Dimension], cell: dict[str, Any]) -> dict[str, Any]:
    by_key = {d.key: d for d in dims}
    return {k: (label(v) if by_key[k].values is not None else v) for k, v in cell.items()}
