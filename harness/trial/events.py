"""What a running trial tells its watchers: the phase it is in, how far it got, its loss curve, its sample grid
and its final metrics. The runner and the training loop call a ``TrialEvents``; the driver passes in the
watchers it wants (the console, Optuna's intermediate values, TensorBoard), so that the trial runner knows
nothing of Optuna or of terminals.

Phases, in order: ``training`` (info: ``start``, ``total`` steps, ``batch``), ``validation`` (``images``),
``sampling`` (``images``, ``steps`` of the sampler), ``metrics`` (``names``), ``calibration`` (``names``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from torch import Tensor

PHASES = ("training", "validation", "sampling", "metrics", "calibration")


class TrialEvents:
    """A watcher of one trial. Every method does nothing here; a watcher overrides what it shows. Methods are
    called from the trial's own thread, between steps: they must be cheap (``count`` runs every step)."""

    def phase(self, name: str, **info: Any) -> None:
        """A phase of ``PHASES`` begins."""

    def count(self, done: int, total: int, item: str = "") -> None:
        """Progress within the phase: ``done`` of ``total`` (training steps, images sampled, metrics computed;
        ``item`` names what is being done, e.g. the metric)."""

    def log(self, step: int, loss: float, images_per_s: float | None) -> None:
        """A point of the training-loss curve: the mean loss of the steps since the last point."""

    def samples(self, grid: Tensor, step: int) -> None:
        """The sample grid's images (uint8 [N, C, H, W]) of the model after ``step`` training steps."""

    def values(self, metrics: Sequence[dict[str, Any]], step: int) -> None:
        """The trial's metric rows (``name``, ``value``, ``step``, ``unit``, ``attrs``), once it is complete."""

    def close(self) -> None:
        """The trial ended (complete or not): flush and release what the watcher holds."""


class Fanout(TrialEvents):
    """Several watchers as one, called in order."""

    def __init__(self, *watchers: TrialEvents):
        self.watchers = watchers

    def phase(self, name: str, **info: Any) -> None:
        for w in self.watchers:
            w.phase(name, **info)

    def count(self, done: int, total: int, item: str = "") -> None:
        for w in self.watchers:
            w.count(done, total, item)

    def log(self, step: int, loss: float, images_per_s: float | None) -> None:
        for w in self.watchers:
            w.log(step, loss, images_per_s)

    def samples(self, grid: Tensor, step: int) -> None:
        for w in self.watchers:
            w.samples(grid, step)

    def values(self, metrics: Sequence[dict[str, Any]], step: int) -> None:
        for w in self.watchers:
            w.values(metrics, step)

    def close(self) -> None:
        for w in self.watchers:
            w.close()


def scalar_numbers(metrics: Sequence[dict[str, Any]]) -> dict[str, float]:
    """The trial's scalar metrics (no step) that have a finite number, by name."""
    out: dict[str, float] = {}
    for m in metrics:
        value = m.get("value")
        if m.get("step") is None and isinstance(value, int | float) and value == value and abs(value) != float("inf"):
            out[m["name"]] = float(value)
    return out
