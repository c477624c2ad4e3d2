"""Optional TensorBoard event files per trial: the training-loss curve (and images/s), the sample grid and the
scalar metrics, written under the trial's folder (``harness.study --tensorboard``; ``tensorboard --logdir
results/<study>`` shows every trial of the study as a run).

TensorBoard is an optional extra (``pip install tensorboard``, or the project's ``[tensorboard]`` extra): the
writer is imported only when a trial opens its event file, and ``tensorboard_available`` lets the driver say
once, in one line, that it is missing instead of failing the study.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from torch import Tensor

from harness.trial.events import TrialEvents, scalar_numbers

EVENTS_FOLDER = "tensorboard"  # in the trial's folder, beside checkpoint/ and config.yaml


def tensorboard_available() -> bool:
    """Whether the ``tensorboard`` package (which ``torch.utils.tensorboard`` writes through) is installed."""
    return importlib.util.find_spec("tensorboard") is not None


def summary_writer(logdir: str, purge_step: int | None) -> Any:
    """PyTorch's ``SummaryWriter`` (imported here: it loads TensorBoard, an optional and heavy package)."""
    from torch.utils.tensorboard import SummaryWriter

    return SummaryWriter(log_dir=logdir, purge_step=purge_step)


class TensorBoardEvents(TrialEvents):
    """Writes one trial's events to ``logdir`` (``<trial folder>/tensorboard/<label>``). Scalars: ``train/loss``
    and ``train/images_per_s`` per loss point, ``metrics/<name>`` at the last training step; images:
    ``samples``; text: ``trial`` (the trial's number and searched values).

    A retry of the same configuration resumes from its checkpoint at step S and writes to the same folder with
    ``purge_step = S + 1``: TensorBoard then hides the earlier attempt's points after S, so the curve has no
    doubled stretch. ``writer`` makes the writer (``summary_writer``; tests pass a recorder)."""

    def __init__(self, logdir: Path, label: str, writer: Callable[[str, int | None], Any] | None = None):
        self.logdir, self.label, self._make = logdir, label, writer or summary_writer
        self._writer: Any = None

    def _open(self, purge_step: int | None = None) -> Any:
        if self._writer is None:
            self.logdir.mkdir(parents=True, exist_ok=True)
            self._writer = self._make(str(self.logdir), purge_step)
            self._writer.add_text("trial", self.label, 0)
        return self._writer

    def phase(self, name: str, **info: Any) -> None:
        if name == "training":
            self._open(purge_step=int(info.get("start", 0)) + 1)

    def log(self, step: int, loss: float, images_per_s: float | None) -> None:
        writer = self._open()
        writer.add_scalar("train/loss", loss, step)
        if images_per_s:
            writer.add_scalar("train/images_per_s", images_per_s, step)

    def samples(self, grid: Tensor, step: int) -> None:
        self._open().add_images("samples", grid, step, dataformats="NCHW")  # uint8: shown as is

    def values(self, metrics: Sequence[dict[str, Any]], step: int) -> None:
        writer = self._open()
        for name, value in scalar_numbers(metrics).items():
            writer.add_scalar(f"metrics/{name}", value, step)

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None
