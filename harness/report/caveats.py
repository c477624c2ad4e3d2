"""What a reader must see before trusting a comparison, extracted from a study's trials frame: the evaluation
sampler's fidelity per arm (``harness.metrics.fidelity``) with a warning where arms differ, and the calibration
baselines (``harness.metrics.calibration``) beside the trials' quality values. The thresholds and names live in
``harness.evaluation_rules`` (no torch: the readers start fast)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import pandas as pd

from harness.evaluation_rules import BASELINES, GUARD_MIN, GUARD_SPREAD, GUARD_STD

FIDELITY = "sampler_fidelity"
FIDELITY_COLUMNS = ["factor", "level", "sampler_fidelity", "n", "warning"]
CALIBRATION_COLUMNS = ["metric", "row", "kind", "value", "n"]


def fidelity_by_level(frame: pd.DataFrame, factors: Sequence[str], levels: Mapping[str, Sequence[str]]) -> pd.DataFrame:
    """Per factor and level: the mean fidelity (variance kept at s = GUARD_STD) over its complete trials, with
    a warning when the factor's levels differ by more than GUARD_SPREAD (the comparison is then partly the
    sampler's) and a note when a level keeps less than GUARD_MIN (detail lost to the sampler in every arm)."""
    if FIDELITY not in frame.columns:
        return pd.DataFrame(columns=FIDELITY_COLUMNS)
    done = frame[(frame["state"] == "complete") & frame[FIDELITY].notna()]
    rows = []
    for factor in factors:
        if factor not in done.columns:
            continue
        by_level = {lv: done.loc[done[factor].astype(str) == lv, FIDELITY] for lv in levels.get(factor, [])}
        means = {lv: float(v.mean()) for lv, v in by_level.items() if len(v)}
        spread = max(means.values()) - min(means.values()) if means else 0.0
        for level, mean in means.items():
            notes = [f"levels of {factor} differ by {spread:.3f} (> {GUARD_SPREAD})"] if spread > GUARD_SPREAD else []
            if mean < GUARD_MIN:
                notes.append(f"keeps {mean:.3f} < {GUARD_MIN}")
            rows.append([factor, level, mean, len(by_level[level]), "; ".join(notes)])
    return pd.DataFrame(rows, columns=FIDELITY_COLUMNS)


def confounded_factors(table: pd.DataFrame) -> list[str]:
    """Factors whose levels differ in sampler fidelity by more than GUARD_SPREAD."""
    spread = table.groupby("factor", sort=False)["sampler_fidelity"].agg(lambda v: v.max() - v.min())
    return [str(f) for f, s in spread.items() if s > GUARD_SPREAD]


def fidelity_warnings(table: pd.DataFrame) -> list[str]:
    """One sentence per factor whose comparison is partly the evaluation sampler's, and one if any arm keeps
    less than GUARD_MIN."""
    out = []
    for factor in confounded_factors(table):
        group = table[table["factor"] == factor]
        shown = ", ".join(f"{lv} {v:.3f}" for lv, v in zip(group["level"], group["sampler_fidelity"], strict=True))
        out.append(
            f"the levels of {factor} keep different fractions of the data's variance under the evaluation "
            f"sampler (at s = {GUARD_STD}: {shown}; the guard allows a spread of {GUARD_SPREAD}); differences in "
            "quality metrics between them are partly the sampler's, not the models' (docs/metrics.md)."
        )
    low = table[table["sampler_fidelity"] < GUARD_MIN]
    if len(low):
        out.append(
            f"the evaluation sampler keeps less than {GUARD_MIN} of the variance at s = {GUARD_STD} in "
            f"{low['level'].nunique()} arm(s) (lowest {low['sampler_fidelity'].min():.3f}): fine detail is lost "
            "to the sampler, whatever the model (use spacing: logsnr or more steps)."
        )
    return out


def calibration_table(frame: pd.DataFrame, configs: pd.Series) -> pd.DataFrame:
    """Per quality metric with baselines: the floor and ceilings (mean over trials), then each configuration's
    mean value over its complete trials. ``configs``: a configuration label per row of ``frame``."""
    rows = []
    metrics = sorted({c.rsplit("_baseline_", 1)[0] for c in frame.columns if "_baseline_" in c})
    done = frame["state"] == "complete"
    for metric in metrics:
        for kind in BASELINES:
            values = pd.to_numeric(frame.loc[done, f"{metric}_baseline_{kind}"], errors="coerce").dropna()
            if len(values):
                label = {"data": "data (floor)", "noise": "noise (ceiling)", "mean_image": "mean image (ceiling)"}
                rows.append([metric, label[kind], "baseline", float(values.mean()), len(values)])
        if metric not in frame.columns:
            continue
        values = pd.to_numeric(frame[metric], errors="coerce")
        for config in dict.fromkeys(configs[done]):
            picked = values[done & (configs == config)].dropna()
            if len(picked):
                rows.append([metric, config, "trials", float(picked.mean()), len(picked)])
    return pd.DataFrame(rows, columns=CALIBRATION_COLUMNS).astype({"value": float}, errors="ignore")
