"""Comparability of sample-based metrics: FID, KID and any value whose attrs carry a sample count or reference
set are only compared on the same basis (samples, reference set, mode, extractor, ...). Each trial's basis is a
column, values on another basis than the study's most common one are flagged, never pooled silently."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

# attrs that must agree for two values of a sample-based metric (FID, KID, ...) to be compared; others
# (a cache hit, KID's subset seed, a weights file's path) may differ without harm
BASIS_KEYS = (
    "n_generated", "n_reference", "reference", "reference_fingerprint", "mode", "extractor", "image_shape",
    "library", "num_subsets", "subset_size",
)  # fmt: skip
GUARDED_METRICS = ("fid", "kid")


def metric_bases(metrics: pd.DataFrame) -> pd.DataFrame:
    """One row per (trial, guarded scalar metric) with a value: ``trial_number``, ``name``, ``basis`` (a
    string of the attrs that must agree, e.g. ``n_generated=5000, reference=cifar10:train``). Guarded: FID,
    KID and any scalar metric whose attrs carry a sample count or reference set."""
    rows = []
    scalar = metrics[metrics["step"].isna() & metrics["value"].notna()] if len(metrics) else metrics
    for rec in scalar.itertuples(index=False):
        attrs = json.loads(rec.attrs_json) if isinstance(rec.attrs_json, str) and rec.attrs_json else {}
        keyed = {k: _basis_value(attrs[k]) for k in BASIS_KEYS if k in attrs}
        if rec.name in GUARDED_METRICS or keyed:
            basis = ", ".join(f"{k}={v}" for k, v in keyed.items()) or "unrecorded"
            rows.append({"trial_number": int(rec.trial_number), "name": rec.name, "basis": basis})
    return pd.DataFrame(rows, columns=["trial_number", "name", "basis"]).drop_duplicates(
        ["trial_number", "name"], keep="last"
    )


def _basis_value(value: Any) -> str:
    """An attr as it enters a basis; a feature extractor is its name and weights' checksum, not its path."""
    if isinstance(value, Mapping):
        name, digest = value.get("name"), value.get("sha256")
        if name or digest:
            return f"{name or '?'}@{str(digest)[:12]}" if digest else str(name)
        return json.dumps(value, sort_keys=True)
    if isinstance(value, list | tuple):
        return "x".join(map(str, value))
    return str(value)


def add_basis_columns(frame: pd.DataFrame, bases: pd.DataFrame) -> tuple[pd.DataFrame, dict[str, list[str]]]:
    """Add ``<metric>_basis`` and ``<metric>_comparable`` (True when the trial's basis is the study's most
    common one) per guarded metric; returns (frame, {metric: distinct bases, most common first})."""
    frame = frame.copy()
    distinct: dict[str, list[str]] = {}
    for name, group in bases.groupby("name", sort=True):
        counts = group["basis"].value_counts()
        distinct[str(name)] = list(counts.index)
        by_trial = dict(zip(group["trial_number"], group["basis"], strict=True))
        frame[f"{name}_basis"] = frame["trial_number"].map(by_trial)
        has = frame[f"{name}_basis"].notna()
        frame[f"{name}_comparable"] = np.where(has, frame[f"{name}_basis"] == counts.index[0], pd.NA)
    return frame, distinct


def basis_difference(bases: Sequence[str]) -> str:
    """Only the attrs in which ``bases`` differ: ``n_generated=256 | n_generated=1024``."""
    parsed = [dict(part.partition("=")[::2] for part in b.split(", ")) for b in bases]
    keys = [k for k in dict.fromkeys(k for p in parsed for k in p) if len({p.get(k) for p in parsed}) > 1]
    if not keys:
        return " | ".join(bases)
    return " | ".join(", ".join(f"{k}={p.get(k, '?')}" for k in keys) for p in parsed)


def comparability_warnings(distinct: Mapping[str, list[str]]) -> list[str]:
    """One sentence per guarded metric computed on more than one basis."""
    return [
        f"{name.upper()} values in this study were computed on {len(b)} different bases "
        f"({basis_difference(b)}; full bases in trials.csv, column {name}_basis); values on different bases "
        f"are not comparable (PAPER.md section 6)."
        for name, b in distinct.items()
        if len(b) > 1
    ]
