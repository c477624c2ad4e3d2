"""What "the same study and seed give the same numbers" means, as a comparison of two databases.

Every metric row of a complete trial is compared, by grid cell (its searched values), except the
measurements of the machine (speed, time, memory, FLOP/s and MFU: they vary from run to run) and the
bookkeeping of how the trial ran (``resumed_from_step``). The rest must be equal bit for bit, on the same
machine and thread count, also when one of the runs was killed and resumed.
"""

from __future__ import annotations

import math

from harness.store.tables import Store

MEASURED = frozenset(
    {
        "train_images_per_s",
        "train_seconds_per_step",
        "sample_images_per_s",
        "sample_seconds_per_step",
        "peak_memory_bytes",
        "sample_peak_memory_bytes",
        "peak_flops_per_s",
        "achieved_flops_per_s",
        "mfu",
    }
)
BOOKKEEPING = frozenset({"resumed_from_step"})

Cell = str  # the trial's searched values, canonical JSON
Values = dict[tuple[str, int | None], float | None]  # (metric name, step) -> value


def comparable_metrics(store: Store, study: str) -> dict[Cell, Values]:
    """Per grid cell of the complete trials: every metric value a rerun must repeat exactly. Raises
    ``ValueError`` when a cell is complete twice or a metric row is doubled (neither may happen)."""
    trials = store.trials(study)
    complete = trials[trials["state"] == "complete"]
    cells = dict(zip(complete["trial_number"], complete["params_json"], strict=True))
    if len(set(cells.values())) != len(cells):
        raise ValueError(f"study {study!r}: a grid cell is complete in more than one trial")
    out: dict[Cell, Values] = {cell: {} for cell in cells.values()}
    metrics = store.metrics(study)
    for row in metrics.itertuples():
        if row.trial_number not in cells or row.name in MEASURED | BOOKKEEPING:
            continue
        step = None if row.step is None or math.isnan(row.step) else int(row.step)
        values = out[cells[row.trial_number]]
        if (row.name, step) in values:
            raise ValueError(f"study {study!r}: trial {row.trial_number} has metric {row.name!r} twice")
        values[(row.name, step)] = None if row.value is None or math.isnan(row.value) else float(row.value)
    return out


def differences(a: dict[Cell, Values], b: dict[Cell, Values]) -> list[str]:
    """One line per cell or value that is not the same in both (empty: identical)."""
    lines = [f"cell {cell} only in the first" for cell in a if cell not in b]
    lines += [f"cell {cell} only in the second" for cell in b if cell not in a]
    for cell in sorted(set(a) & set(b)):
        for key in sorted(set(a[cell]) | set(b[cell]), key=str):
            x, y = a[cell].get(key, "missing"), b[cell].get(key, "missing")
            if x != y:
                lines.append(f"{cell} {key[0]}[{key[1]}]: {x} != {y}")
    return lines
