"""Timing a reader can trust: which trials' throughput and MFU were measured under load, a per-configuration
timing table, and one note per factor that says whether its levels' timings may be compared at all.

A factor whose levels run identical networks (same FLOPs per image and parameter count, e.g. a noise
schedule or a loss) cannot change throughput or MFU: any difference between its levels is the machine's
(load, clocks, caches), so the report says so instead of plotting a speed-up. For a factor that changes the
network, each level's timing difference to the base gets the effects table's interval (``harness.report.
effects``) and is called *within the noise* when that interval includes 0, and *measured under load* when
a trial of either arm was (``harness.metrics.perf.under_load``, recorded by the throughput and MFU metrics).
"""

from __future__ import annotations

import json
from collections.abc import Sequence

import numpy as np
import pandas as pd

from harness.report.effects import effects
from harness.report.tables import StudyTables

PHASES = {"train_images_per_s": "train", "mfu": "train", "sample_images_per_s": "sample"}
LABELS = {"train_images_per_s": "training images/s", "sample_images_per_s": "sampling images/s", "mfu": "MFU"}
NETWORK_COLUMNS = ("flops_per_image", "params")
LOAD_COLUMNS = ["trial_number", "phase", "other_load_cores", "torch_threads", "under_load"]
TIMING_COLUMNS = [
    "configuration", "n", "training images/s", "sampling images/s", "MFU %", "other load (cores)",
    "torch threads", "under load",
]  # fmt: skip


def trial_load(metrics: pd.DataFrame) -> pd.DataFrame:
    """Per trial and phase (train, sample): the load its timing was measured under (``LOAD_COLUMNS``), from
    the attrs of ``train_images_per_s`` and ``sample_images_per_s``; ``under_load`` is NA where not recorded."""
    rows = []
    names = {"train_images_per_s": "train", "sample_images_per_s": "sample"}
    scalar = metrics[metrics["name"].isin(list(names)) & metrics["step"].isna()] if len(metrics) else metrics
    for rec in scalar.itertuples(index=False):
        attrs = json.loads(rec.attrs_json) if isinstance(rec.attrs_json, str) and rec.attrs_json else {}
        loaded = attrs.get("under_load")
        rows.append(
            [
                int(rec.trial_number),
                names[rec.name],
                attrs.get("other_load_cores"),
                attrs.get("torch_threads"),
                pd.NA if loaded is None else bool(loaded),
            ]
        )
    return pd.DataFrame(rows, columns=LOAD_COLUMNS).drop_duplicates(["trial_number", "phase"], keep="last")


def with_load(frame: pd.DataFrame, load: pd.DataFrame) -> pd.DataFrame:
    """``frame`` (one row per trial) with ``<phase>_under_load``, ``<phase>_other_load_cores``, ``torch_threads``."""
    out = frame.copy()
    for phase in ("train", "sample"):
        part = load[load["phase"] == phase].set_index("trial_number")
        out[f"{phase}_under_load"] = out["trial_number"].map(part["under_load"]).astype(object)
        out[f"{phase}_other_load_cores"] = pd.to_numeric(out["trial_number"].map(part["other_load_cores"]))
        if phase == "train":
            out["torch_threads"] = out["trial_number"].map(part["torch_threads"])
    return out


def loaded(rows: pd.DataFrame, metric: str) -> pd.Series:
    """True for rows whose ``metric`` was measured under load (NA counts as not known to be loaded)."""
    column = f"{PHASES.get(metric, 'train')}_under_load"
    if column not in rows.columns:
        return pd.Series(False, index=rows.index)
    return rows[column].map(lambda v: v is True)


def _signature(done: pd.DataFrame) -> pd.Series | None:
    """Per trial: its network's FLOPs per image and parameter count as one string (None: neither recorded)."""
    columns = [c for c in NETWORK_COLUMNS if c in done.columns and done[c].notna().any()]
    if not columns:
        return None
    return done[columns].apply(pd.to_numeric, errors="coerce").round(6).astype(str).agg("|".join, axis=1)


def _recorded(rows: pd.DataFrame) -> pd.Series:
    """True for rows whose training timing recorded whether it was under load (older databases did not)."""
    flags = rows.get("train_under_load", pd.Series(pd.NA, index=rows.index, dtype=object))
    return flags.map(lambda v: v is True or v is False)


def same_network(done: pd.DataFrame, factor: str, others: Sequence[str]) -> bool | None:
    """Whether ``factor``'s levels run identical networks: within every combination of the other factors, one
    value of FLOPs per image and parameter count. None when neither was recorded."""
    signature = _signature(done)
    if signature is None or factor not in done.columns:
        return None
    keys = [done[c].astype(str) for c in others if c in done.columns and c != factor]
    groups = signature.groupby(keys) if keys else signature.groupby(np.zeros(len(signature)))
    return bool(groups.nunique().max() <= 1)


def all_same_network(done: pd.DataFrame) -> bool | None:
    """Whether every complete trial of the study runs one network (None: FLOPs and parameters not recorded)."""
    signature = _signature(done)
    return None if signature is None or signature.empty else bool(signature.nunique() <= 1)


def timing_table(frame: pd.DataFrame) -> pd.DataFrame:
    """Per configuration (``frame`` has ``config`` and the load columns of ``with_load``): mean and standard
    deviation of each timing metric, the largest other load, torch threads and how many trials were loaded."""
    done = frame[frame["state"] == "complete"]
    rows = []
    for config, group in done.groupby("config", sort=False):
        row = {"configuration": config, "n": len(group)}
        for metric, column, scale in (
            ("train_images_per_s", "training images/s", 1.0),
            ("sample_images_per_s", "sampling images/s", 1.0),
            ("mfu", "MFU %", 100.0),
        ):
            values = pd.to_numeric(group.get(metric, pd.Series(dtype=float)), errors="coerce").dropna() * scale
            row[column] = _mean_sd(values)
        load = pd.concat([group.get(f"{p}_other_load_cores", pd.Series(dtype=float)) for p in ("train", "sample")])
        row["other load (cores)"] = f"{load.max():.2f}" if load.notna().any() else "not recorded"
        threads = group.get("torch_threads", pd.Series(dtype=object)).dropna().astype(str).unique()
        row["torch threads"] = ", ".join(threads) or "not recorded"
        flags = [loaded(group, m) for m in ("train_images_per_s", "sample_images_per_s")]
        count = int((flags[0] | flags[1]).sum())
        known = _recorded(group).any()
        row["under load"] = f"{count} of {len(group)}" if known else "not recorded"
        rows.append(row)
    return pd.DataFrame(rows, columns=TIMING_COLUMNS)


def _mean_sd(values: pd.Series) -> str:
    if values.empty:
        return ""
    if len(values) < 2:
        return f"{values.iloc[0]:.4g}"
    return f"{values.mean():.4g} ± {values.std(ddof=1):.3g}"


def timing_notes(tables: StudyTables, frame: pd.DataFrame) -> list[str]:
    """One sentence per factor (and, for factors that change the network, per timing metric and level) on
    whether its levels' throughput and MFU differ beyond the noise; ``frame`` as for ``timing_table``."""
    done = frame[frame["state"] == "complete"]
    present = [m for m in PHASES if m in done.columns and done[m].notna().any()]
    if not present or done.empty:
        return []
    notes = []
    for factor in tables.factors:
        levels = [lv for lv in tables.levels.get(factor, []) if (done[factor].astype(str) == lv).any()]
        if len(levels) < 2:
            continue
        same = same_network(done, factor, tables.factors)
        if same:
            notes.append(_identical(factor, done, present))
            continue
        table = effects(
            done, [factor], [{"metric": m, "direction": "maximize"} for m in present], tables.seed_key,
            levels={factor: levels}, params=tables.params,
        )  # fmt: skip
        for rec in table[~table["is_base"]].itertuples(index=False):
            notes.append(_difference(factor, rec, done))
    return notes


def _identical(factor: str, done: pd.DataFrame, present: Sequence[str]) -> str:
    metric = present[0]
    means = done.groupby(done[factor].astype(str))[metric].mean().dropna()
    spread = ""
    if len(means) > 1 and means.min() > 0:
        spread = (
            f"; here {LABELS[metric]} ranges from {_fmt(means.min(), metric)} to {_fmt(means.max(), metric)} "
            f"between its levels ({means.max() / means.min():.2f}x)"
        )
    n = int(loaded(done, metric).sum())
    under = f"; {n} of {len(done)} trials were timed under load" if n else ""
    return (
        f"{factor}: its levels run identical networks (same FLOPs per image and parameter count), so their "
        f"throughput and MFU cannot differ by design{spread}{under}. Any difference is the machine's (load, "
        "clocks), not an effect of this factor, and is not shown as one."
    )


def _difference(factor: str, rec, done: pd.DataFrame) -> str:
    metric = rec.objective
    base = rec.base_level
    if pd.isna(rec.diff_ci_low) or pd.isna(rec.mean):
        return f"{factor}={rec.level} vs {base}: {LABELS[metric]} needs at least 2 trials per level for an interval."
    rel = rec.rel_diff
    ci = f"[{100 * rec.rel_diff_ci_low:+.0f} %, {100 * rec.rel_diff_ci_high:+.0f} %]" if not pd.isna(rel) else ""
    text = f"{factor}={rec.level} vs {base}: {LABELS[metric]} {100 * rel:+.0f} % (95 % CI {ci})"
    text += ": resolved" if rec.resolved is True else ": within the noise (the interval includes 0)"
    arms = done[done[factor].astype(str).isin([str(rec.level), str(base)])]
    n = int(loaded(arms, metric).sum())
    if n:
        text += f"; measured under load ({n} of {len(arms)} trials), so the figure may not hold on a quiet machine"
    return text + "."


def _fmt(value: float, metric: str) -> str:
    return f"{100 * value:.3g} %" if metric == "mfu" else f"{value:.4g}"


def load_summary(frame: pd.DataFrame) -> str:
    """One sentence on how many complete trials were timed under load (empty when none or not recorded)."""
    done = frame[frame["state"] == "complete"]
    if not _recorded(done).any():
        return ""
    hit = loaded(done, "train_images_per_s") | loaded(done, "sample_images_per_s")
    if not hit.any():
        return ""
    peak = np.nanmax(done[["train_other_load_cores", "sample_other_load_cores"]].to_numpy(dtype=float))
    return (
        f"{int(hit.sum())} of {len(done)} complete trials were timed under load (other processes used up to "
        f"{peak:.2f} cores while they were timed, more than the cores they left spare): their throughput and MFU "
        "are marked and should not be quoted as the configuration's speed."
    )
