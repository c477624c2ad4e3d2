"""What a running study prints: per trial a line as each phase begins, a step counter while it trains and
samples, and the outcome; per study a progress line (``harness.driver.progress``) and the summary.

On a terminal the counters are bars (tqdm, on stdout). When stdout is not a terminal (a log file, a pipe, a
batch system) every message is a plain line, never a carriage return or a bar, and the counters print at most
one line every ``HARNESS_PROGRESS_S`` seconds (default 30), plus the last count of each phase. ``quiet`` keeps
the essential lines only: which trial starts, its outcome (complete with its objectives, failed with its
reason, skipped), notes and the summary.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from typing import Any, TextIO

from tqdm import tqdm

from harness.errors import UsageError
from harness.trial.events import TrialEvents

PROGRESS_S = 30.0  # plain logs: seconds between two counter lines of a phase


def progress_interval() -> float:
    """Seconds between two counter lines in plain logs (``HARNESS_PROGRESS_S``, default 30; 0 prints every
    count)."""
    raw = os.environ.get("HARNESS_PROGRESS_S")
    if raw is None:
        return PROGRESS_S
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not 0 <= value < float("inf"):
        raise UsageError(f"HARNESS_PROGRESS_S: must be a number of seconds >= 0, got {raw!r}")
    return value


class Console:
    """The study's printer. ``interactive``: bars on a terminal (default: whether ``out`` is one)."""

    def __init__(
        self,
        quiet: bool = False,
        interactive: bool | None = None,
        interval_s: float = PROGRESS_S,
        clock: Callable[[], float] = time.monotonic,
        out: TextIO | None = None,
    ):
        self.out = out or sys.stdout
        self.quiet = quiet
        self.interactive = (not quiet) and (self.out.isatty() if interactive is None else interactive)
        self.interval_s, self.clock = interval_s, clock
        self.bar: Any = None

    def line(self, text: str, essential: bool = False) -> None:
        """Print one line (``essential`` lines also when quiet); above an open bar on a terminal."""
        if self.quiet and not essential:
            return
        if self.bar is not None:
            self.bar.write(text, file=self.out)
        else:
            print(text, file=self.out, flush=True)

    def trial(self, number: int) -> TrialConsole:
        """The watcher that prints trial ``number``'s phases and counters."""
        return TrialConsole(self, number)


def _phase_text(name: str, info: dict[str, Any]) -> str:
    if name == "training":
        start, total = info.get("start", 0), info.get("total")
        where = f"resuming at step {start} of {total}" if start else f"{total} steps"
        return f"training: {where}, batch {info.get('batch')}"
    if name == "validation":
        return f"validation loss on {info.get('images')} held-out images"
    if name == "sampling":
        return f"sampling {info.get('images')} images ({info.get('steps')} sampler steps)"
    if name == "metrics":
        return f"metrics: {', '.join(info.get('names', [])) or 'none'}"
    if name == "calibration":
        return f"calibration baselines for {', '.join(info.get('names', []))}"
    return name


COUNTED = {"sampling": "images"}  # the unit of a phase's counter (training counts steps)


class TrialConsole(TrialEvents):
    """Prints one trial's phases (``trial N: sampling 256 images (64 sampler steps)``) and its counters: a bar
    on a terminal, else rate-limited plain lines (``trial N: training step 120/300, loss 0.0345, 12.3 img/s``).
    Metric names are printed as each metric starts (a slow one, FID, is never silent)."""

    def __init__(self, console: Console, number: int):
        self.console, self.number = console, number
        self.current = ""
        self.loss: float | None = None
        self.images_per_s: float | None = None
        self.last_line = float("-inf")

    def _say(self, text: str) -> None:
        self.console.line(f"trial {self.number}: {text}")
        self.last_line = self.console.clock()

    def _close_bar(self) -> None:
        """Close the phase's bar; a finished phase leaves the line plain logs end with (``training step
        300/300, loss ...``)."""
        bar = self.console.bar
        if bar is not None:
            bar.close()
            self.console.bar = None
            if bar.total and bar.n >= bar.total:
                self._say(self._count_text(bar.n, bar.total))

    def phase(self, name: str, **info: Any) -> None:
        self._close_bar()
        self.current = name
        self._say(_phase_text(name, info))
        if self.console.interactive and name in ("training", "sampling"):
            total, start = info.get("total") or info.get("images"), info.get("start", 0)
            self.console.bar = tqdm(
                total=total, initial=start, desc=f"trial {self.number} {name}", leave=False, file=self.console.out
            )

    def count(self, done: int, total: int, item: str = "") -> None:
        if self.console.quiet:
            return
        bar = self.console.bar
        if bar is not None:
            bar.update(done - bar.n)  # tqdm redraws at most every 0.1 s
            return
        if self.current == "metrics":
            if item:  # each metric as it starts: a slow one (FID on 50k images) is never silent
                self._say(f"metric {done + 1}/{total}: {item}")
            return
        if not self.console.interactive and (
            done == total or self.console.clock() - self.last_line >= self.console.interval_s
        ):
            self._say(self._count_text(done, total))

    def _count_text(self, done: int, total: int) -> str:
        if self.current != "training":
            return f"{self.current} {done}/{total} {COUNTED.get(self.current, '')}".rstrip()
        text = f"training step {done}/{total}"
        if self.current == "training" and self.loss is not None:
            speed = f", {self.images_per_s:.1f} img/s" if self.images_per_s else ""
            text += f", loss {self.loss:.4f}{speed}"
        return text

    def log(self, step: int, loss: float, images_per_s: float | None) -> None:
        self.loss, self.images_per_s = loss, images_per_s
        if self.console.bar is not None:
            self.console.bar.set_postfix(loss=f"{loss:.4f}", refresh=False)

    def close(self) -> None:
        self._close_bar()
