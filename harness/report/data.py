"""What the report shows beyond ``harness.report.tables.StudyTables``: provenance, configuration labels, curves,
sample grids and Optuna's parameter importances. Everything here is data; ``plots`` and ``render`` draw it.
"""

from __future__ import annotations

import json
import math
import re
import warnings
from collections import Counter
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pandas as pd
from sqlalchemy import inspect
from sqlalchemy.engine import make_url

from harness.report.tables import StudyTables
from harness.store.tables import Store

MIN_TRIALS_FOR_IMPORTANCE = 4
MIN_VARYING_PARAMS_FOR_IMPORTANCE = 2


def short_names(keys: list[str]) -> dict[str, str]:
    """``diffusion.schedule`` -> ``schedule`` unless two keys share a last segment."""
    last = Counter(k.split(".")[-1] for k in keys)
    return {k: k.split(".")[-1] if last[k.split(".")[-1]] == 1 else k for k in keys}


def config_labels(tables: StudyTables) -> pd.Series:
    """Per trial: the configuration without the seed axis (``schedule=cosine, loss=mse``)."""
    names = short_names(tables.factors)
    if not tables.factors:
        return pd.Series(["(single configuration)"] * len(tables.trials), index=tables.trials.index)
    return tables.trials.apply(lambda r: ", ".join(f"{names[k]}={r[k]}" for k in tables.factors), axis=1)


DISPLAY_NAMES = {
    "fid": "FID",
    "kid": "KID",
    "swd": "SWD",
    "val_loss": "validation loss",
    "train_loss": "training loss",
    "val_loss_by_logsnr": "validation loss",
    "train_images_per_s": "training throughput",
    "sample_images_per_s": "sampling throughput",
    "mfu": "MFU",
    "flops_per_image": "FLOPs per image",
    "params": "parameters",
    "peak_memory_bytes": "peak training memory",
}
PERCENT_METRICS = ("mfu",)  # fractions the plots show in per cent
DEFAULT_UNITS = {  # what the harness's metrics record, for rows that carry no unit (older databases)
    "swd": "x1e3",
    "train_images_per_s": "images/s",
    "sample_images_per_s": "images/s",
    "flops_per_image": "FLOP",
    "peak_memory_bytes": "bytes",
}


def metric_unit(tables: StudyTables, name: str) -> str:
    """The unit an axis of ``name`` carries: the recorded unit, a recorded scale (SWD: ``x1e3``), the loss a
    validation loss measures, or per cent for the fractions in PERCENT_METRICS."""
    if name in PERCENT_METRICS:
        return "%"
    m = tables.metrics
    rows = m[(m["name"] == name) & m["value"].notna()] if len(m) else m
    units = rows["unit"].dropna().astype(str) if "unit" in rows.columns else pd.Series(dtype=str)
    parts = [units.mode().iloc[0]] if len(units) else []
    attrs = _first_attrs(rows)
    if isinstance(attrs.get("scale"), int | float) and attrs["scale"] not in (0, 1):
        exponent = math.log10(abs(attrs["scale"]))
        parts.append(f"x1e{exponent:.0f}" if exponent == round(exponent) else f"x{attrs['scale']:g}")
    if name.startswith("val_loss"):  # the per-bucket rows carry no loss name; the scalar's do
        loss = attrs.get("loss") or _first_attrs(m[m["name"] == "val_loss"] if len(m) else m).get("loss")
        parts += [str(loss).replace("_", "-")] if loss else []
    return ", ".join(parts) or DEFAULT_UNITS.get(name, "")


def _first_attrs(rows: pd.DataFrame) -> dict[str, Any]:
    texts = [t for t in rows["attrs_json"].dropna().head(1) if isinstance(t, str) and t] if len(rows) else []
    return json.loads(texts[0]) if texts else {}


def metric_label(tables: StudyTables, name: str) -> str:
    """An axis label with its unit: ``SWD (x1e3)``, ``training throughput (images/s)``, ``MFU (%)``."""
    match = re.fullmatch(r"swd_(\d+)", name)
    display = f"SWD at {match.group(1)} px" if match else DISPLAY_NAMES.get(name, name)
    unit = metric_unit(tables, "swd" if match else name)
    return f"{display} ({unit})" if unit else display


def safe_url(url: str) -> str:
    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001 - a display string only
        return "(unparseable URL)"


def _distinct(values: pd.Series) -> list[str]:
    counts = values.dropna().astype(str).value_counts()
    return [f"{v} ({n} trial{'s' if n != 1 else ''})" for v, n in counts.items()]


def provenance(tables: StudyTables, store: Store) -> dict[str, Any]:
    """Study header: where the study came from and what ran it (as display strings)."""
    row = tables.study or {}
    trials = tables.trials
    env_keys: dict[str, Counter] = {}
    for text in trials["env_json"].dropna():
        for key, value in (json.loads(text) or {}).items():
            if key not in ("host", "device", "git_revision", "torch_version", "cuda_version"):
                env_keys.setdefault(key, Counter())[json.dumps(value) if not isinstance(value, str) else value] += 1
    spec = row.get("spec_json")
    return {
        "study_file": row.get("study_file") or "(not recorded)",
        "created_at": str(row.get("created_at") or "(not recorded)"),
        "storage": safe_url(store.url),
        "sampler": str(tables.search.get("sampler", "(not recorded)")),
        "space": json.dumps(tables.search.get("space", {}), indent=1, sort_keys=True),
        "objectives": ", ".join(f"{o['metric']} ({o['direction']})" for o in tables.objectives) or "(none)",
        "git_revision": _distinct(trials["git_revision"]) or ["(not recorded)"],
        "host": _distinct(trials["host"]),
        "device": _distinct(trials["device"]),
        "torch_version": _distinct(trials["torch_version"]),
        "cuda_version": _distinct(trials["cuda_version"]),
        "environment": {k: [f"{v} ({n})" for v, n in c.most_common()] for k, c in sorted(env_keys.items())},
        "spec": json.dumps(json.loads(spec), indent=2, sort_keys=True) if spec else "(not recorded)",
        "generated_at": datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S UTC"),
        "states": dict(Counter(trials["state"])),
    }


def stepped(tables: StudyTables, name: str) -> pd.DataFrame:
    """A stepped metric (``train_loss``, ``val_loss_by_logsnr``) as a long frame with config labels and,
    for per-bucket metrics, the bucket's logSNR midpoint (``x``)."""
    m = tables.metrics
    rows = m[(m["name"] == name) & m["step"].notna() & m["value"].notna()].copy()
    labels = dict(zip(tables.trials["trial_number"], config_labels(tables), strict=True))
    rows["config"] = rows["trial_number"].map(labels)
    rows["step"] = rows["step"].astype(int)
    attrs = rows["attrs_json"].map(lambda t: json.loads(t) if isinstance(t, str) and t else {})
    low = pd.to_numeric(attrs.map(lambda a: a.get("logsnr_low")), errors="coerce")
    high = pd.to_numeric(attrs.map(lambda a: a.get("logsnr_high")), errors="coerce")
    rows["x"] = np.where(low.notna() & high.notna(), (low + high) / 2, rows["step"])
    return rows.sort_values(["trial_number", "step"], ignore_index=True)


def sample_grids(tables: StudyTables, store: Store) -> pd.DataFrame:
    """trial_number, config, path of each trial's sample-grid artifact (the last one per trial)."""
    art = store.artifacts(tables.name)
    art = art[art["kind"] == "sample_grid"].drop_duplicates("trial_number", keep="last")
    labels = dict(zip(tables.trials["trial_number"], config_labels(tables), strict=True))
    seeds = dict(zip(tables.trials["trial_number"], tables.trials.get(tables.seed_key, pd.Series()), strict=False))
    out = art[["trial_number", "path"]].copy()
    out["config"] = out["trial_number"].map(labels)
    out["seed"] = out["trial_number"].map(seeds) if tables.seed_key else None
    return out.sort_values("trial_number", ignore_index=True)


def importances(tables: StudyTables, store: Store) -> tuple[pd.DataFrame | None, str]:
    """Optuna's parameter importances per objective (long: objective, param, importance), or None and
    the reason they are missing."""
    done = tables.trials[tables.trials["state"] == "complete"]
    varying = [p for p in tables.params if done[p].astype(str).nunique() > 1] if len(done) else []
    if len(done) < MIN_TRIALS_FOR_IMPORTANCE:
        return None, f"needs at least {MIN_TRIALS_FOR_IMPORTANCE} complete trials (has {len(done)})"
    if len(varying) < MIN_VARYING_PARAMS_FOR_IMPORTANCE:
        return None, (
            f"needs at least {MIN_VARYING_PARAMS_FOR_IMPORTANCE} searched parameters that vary "
            f"across complete trials (has {len(varying)})"
        )
    try:
        import optuna

        if not inspect(store.engine).has_table("studies"):
            return None, "the database has no Optuna tables"
        optuna.logging.set_verbosity(optuna.logging.ERROR)
        study = optuna.load_study(study_name=tables.name, storage=store.url)
        rows = []
        for index, objective in enumerate(tables.objectives or [{"metric": "objective"}]):
            # PED-ANOVA ranks low target values as good: negate objectives that are maximised
            sign = -1.0 if objective.get("direction") == "maximize" else 1.0
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)  # the note that low targets count as good
                values = optuna.importance.get_param_importances(
                    study,
                    params=[p for p in varying if _in_optuna(study, p)] or None,
                    target=lambda t, i=index, s=sign: s * t.values[i],
                )
            rows += [{"objective": objective["metric"], "param": k, "importance": v} for k, v in values.items()]
    except Exception as err:  # noqa: BLE001 - any failure becomes the reason shown in the report
        return None, f"Optuna could not compute them: {type(err).__name__}: {' '.join(str(err).split())}"
    if not rows:
        return None, "Optuna returned no importances"
    return pd.DataFrame(rows), ""


def _in_optuna(study: Any, param: str) -> bool:
    return any(param in t.params for t in study.get_trials(deepcopy=False))


# -- Pareto front -------------------------------------------------------------------------------------
def pareto_mask(cost: Sequence[float], objective: Sequence[float], direction: str = "minimize") -> np.ndarray:
    """True for points not dominated by any other: lower ``cost`` (e.g. FLOPs) and better ``objective``."""
    x = np.asarray(cost, dtype=float)
    y = np.asarray(objective, dtype=float) * (1.0 if direction == "minimize" else -1.0)
    ok = np.isfinite(x) & np.isfinite(y)
    mask = np.zeros(len(x), dtype=bool)
    for i in np.flatnonzero(ok):
        dominated = ok & (x <= x[i]) & (y <= y[i]) & ((x < x[i]) | (y < y[i]))
        mask[i] = not dominated.any()
    return mask
