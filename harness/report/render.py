"""Write a study's report: extract (``harness.report.tables`` + ``data``), then render CSV, PNG and HTML."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import pandas as pd
from jinja2 import Environment, PackageLoader, select_autoescape

from harness.errors import UsageError
from harness.paths import slug
from harness.report import data, plots, timing
from harness.report.caveats import calibration_table
from harness.report.tables import StudyTables, study_tables
from harness.safe_text import frame_for_spreadsheet
from harness.store.connect import open_store
from harness.store.tables import Store

SUMMARY_FILE = "summary.csv"
TRIALS_FILE = "trials.csv"
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".gif", ".webp")


def fmt(value: Any) -> str:
    """A cell for the HTML tables: 4 significant digits for floats, blank for missing."""
    if value is None or (isinstance(value, float) and math.isnan(value)) or value is pd.NA:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def table(frame: pd.DataFrame) -> dict[str, list]:
    return {
        "columns": [str(c) for c in frame.columns],
        "rows": [[fmt(v) for v in row] for row in frame.itertuples(index=False)],
    }


def _plot_all(tables: StudyTables, frame: pd.DataFrame, curves: dict, importances, out: Path):
    figures: list[plots.Figure] = []
    missing: list[tuple[str, str]] = []
    jobs = [
        ("Effects per factor", lambda: plots.plot_effects(tables, frame, out)),
        ("Objective vs FLOPs (Pareto front)", lambda: plots.plot_pareto(tables, frame, out)),
        ("Throughput and MFU", lambda: plots.plot_throughput(tables, frame, out)),
        ("Loss curves", lambda: plots.plot_losses(tables, curves, out)),
        ("SWD per pyramid level", lambda: plots.plot_swd_levels(tables, frame, out)),
    ]
    if importances[0] is not None:
        jobs.append(("Parameter importances", lambda: plots.plot_importances(importances[0], out)))
    else:
        missing.append(("Parameter importances", importances[1]))
    for title, job in jobs:
        try:
            with plt.rc_context({"text.parse_math": False}):  # labels from the database are text, not TeX
                figures += job()
        except plots.Skip as why:
            missing.append((title, str(why)))
        except Exception as err:  # noqa: BLE001 - one broken plot must not lose the whole report
            plt.close("all")
            missing.append((title, f"plotting failed: {type(err).__name__}: {' '.join(str(err).split())}"))
    return figures, missing


def _copy_samples(grids: pd.DataFrame, out: Path) -> tuple[list[dict], list[tuple[str, str]]]:
    shown, missing = [], []
    if len(grids):
        (out / "samples").mkdir(exist_ok=True)
    for rec in grids.itertuples(index=False):
        source = Path(rec.path)
        suffix = source.suffix.lower() if source.suffix.lower() in IMAGE_SUFFIXES else ".png"
        target = out / "samples" / f"trial_{int(rec.trial_number)}{suffix}"
        if not source.is_file():
            missing.append((f"Samples of trial {int(rec.trial_number)}", f"file not found: {rec.path}"))
            continue
        shutil.copyfile(source, target)
        shown.append(
            {
                "trial": int(rec.trial_number),
                "config": rec.config,
                "seed": fmt(rec.seed),
                "file": f"samples/{target.name}",
                "source": str(rec.path),
            }
        )
    return shown, missing


def render_report(storage: str | None, study: str, out: str | Path | None = None) -> Path:
    """Render ``study`` from the database at ``storage`` (opened read-only) into ``out`` (default
    ``reports/<study>/``); returns the path of index.html. Unknown studies and missing databases raise
    ``UsageError``."""
    store = open_store(storage, create=False)
    target = Path(out) if out is not None else Path("reports") / slug(study)
    return write_report(store, study, target)


def write_report(store: Store, study: str, out: Path) -> Path:
    """Render ``study`` from ``store`` into ``out`` (created); returns the path of index.html."""
    tables = study_tables(store, study)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise UsageError(f"cannot create the folder {out}: {err.strerror or err}", subject="out") from None
    # text cells a spreadsheet would run as formulas (a parameter value "=cmd|...") are quoted
    frame_for_spreadsheet(tables.trial_csv()).to_csv(out / TRIALS_FILE, index=False)
    frame_for_spreadsheet(tables.effects).to_csv(out / SUMMARY_FILE, index=False)

    frame = tables.trials.assign(config=data.config_labels(tables))
    frame = timing.with_load(frame, timing.trial_load(tables.metrics))
    done = frame[frame["state"] == "complete"]
    figures: list[plots.Figure] = []
    missing: list[tuple[str, str]] = []
    samples: list[dict] = []
    if len(done):
        curves = {name: data.stepped(tables, name) for name in ("train_loss", "val_loss_by_logsnr")}
        figures, missing = _plot_all(tables, frame, curves, data.importances(tables, store), out)
    grids = data.sample_grids(tables, store)
    samples, missing_samples = _copy_samples(grids, out)
    missing += missing_samples

    problems = frame[frame["state"].isin(["failed", "pruned"])]
    unavailable = _unavailable(tables)
    env = Environment(
        loader=PackageLoader("harness.report", "templates"),
        autoescape=select_autoescape(default=True, default_for_string=True),
    )
    html = env.get_template("index.html").render(
        study=tables.name,
        prov=data.provenance(tables, store),
        n_trials=len(frame),
        n_complete=len(done),
        verdicts=_verdict_view(tables.verdicts()),
        timing={
            "table": table(timing.timing_table(frame)),
            "notes": timing.timing_notes(tables, frame),
            "load": timing.load_summary(frame),
        },
        warnings=tables.warnings,
        fidelity_warnings=tables.fidelity_warnings,
        fidelity=table(tables.fidelity),
        calibration=table(calibration_table(frame, frame["config"])),
        objectives=tables.objectives,
        factors=tables.factors,
        seed_key=tables.seed_key,
        effects=table(_effects_view(tables.effects)),
        has_effects=len(tables.effects) > 0,
        figures=figures,
        missing=missing,
        samples=samples,
        problems=[
            {
                "number": int(r.trial_number),
                "state": r.state,
                "config": r.config,
                "error": r.error if isinstance(r.error, str) and r.error else "(no reason recorded)",
            }
            for r in problems.itertuples(index=False)
        ],
        unavailable=unavailable,
        trials=table(tables.trial_csv()),
        files={"trials": TRIALS_FILE, "summary": SUMMARY_FILE},
    )
    (out / "index.html").write_text(html, encoding="utf-8")
    return out / "index.html"


def _effects_view(effects: pd.DataFrame) -> pd.DataFrame:
    """The effects table as shown: CIs as ``[low, high]`` pairs, fewer columns than summary.csv."""
    view = pd.DataFrame(
        {
            "factor": effects["factor"],
            "level": effects["level"],
            "objective": effects["objective"],
            "n": effects["n"],
            "mean": effects["mean"],
            "std": effects["std"],
            "95% CI": [_ci(a, b) for a, b in zip(effects["ci_low"], effects["ci_high"], strict=True)],
            "diff to base": effects["diff"],
            "95% CI of diff": [_ci(a, b) for a, b in zip(effects["diff_ci_low"], effects["diff_ci_high"], strict=True)],
            "relative": [_pct(v) for v in effects["rel_diff"]],
            "p": effects["p_value"],
            "test": effects["test"],
            "pairs": effects["n_pairs"].where(effects["n_pairs"] > 0),
            "verdict": effects["verdict"],
            "warning": effects["warning"],
        }
    )
    return view


def _ci(low: float, high: float) -> str:
    return "" if pd.isna(low) or pd.isna(high) else f"[{low:.4g}, {high:.4g}]"


def _pct(value: float) -> str:
    return "" if value is None or pd.isna(value) else f"{100 * value:+.1f} %"


def _verdict_view(verdicts: pd.DataFrame) -> list[dict[str, str]]:
    """The verdict block: per factor and objective, the numbers as display strings and the sentence."""
    out = []
    for row in verdicts.to_dict("records"):
        compared = row["level"] is not None and not pd.isna(row["diff"])
        pairs = int(row["n_pairs"] or 0) if compared else 0
        better = "lower" if row["direction"] == "minimize" else "higher"
        # the difference is the best level's, or the runner-up's when the base is best
        runner_up = f" (runner-up: {row['level']})" if compared and row["level"] != row["best_level"] else ""
        out.append(
            {
                "factor": row["factor"],
                "objective": f"{row['objective']} ({better} is better)",
                "best": fmt(row["best_level"]),
                "base": f"{row['base_level']}{runner_up}" if compared else "",
                "diff": fmt(row["diff"]) if compared else "",
                "ci": _ci(row["diff_ci_low"], row["diff_ci_high"]) if compared else "",
                "relative": _pct(row["rel_diff"]) if compared else "",
                "relative_ci": (
                    f"[{_pct(row['rel_diff_ci_low'])}, {_pct(row['rel_diff_ci_high'])}]"
                    if compared and not pd.isna(row["rel_diff_ci_low"])
                    else ""
                ),
                "p": f"{row['p_value']:.2g}" if compared and not pd.isna(row["p_value"]) else "",
                "seeds": (f"{pairs} paired" if pairs else f"{row['n']} vs {row['base_n']} (Welch)") if compared else "",
                "verdict": row["verdict"] or "",
                "resolved": bool(row["resolved"] is True),
                "headline": row["headline"],
            }
        )
    return out


def _unavailable(tables: StudyTables) -> list[dict]:
    """Scalar metrics recorded as unavailable (value NULL), grouped by reason (from attrs), so that one reason
    (e.g. the offline FID how-to shared by fid, kid and kid_std) is shown once with every metric it applies to."""
    m = tables.metrics
    rows = m[m["step"].isna() & m["value"].isna()] if len(m) else m
    groups: dict[str, dict[str, set[int]]] = {}
    for rec in rows.itertuples(index=False):
        attrs = json.loads(rec.attrs_json) if isinstance(rec.attrs_json, str) and rec.attrs_json else {}
        reason = str(attrs.get("reason") or attrs.get("error") or "(no reason recorded)")
        groups.setdefault(reason, {}).setdefault(rec.name, set()).add(int(rec.trial_number))
    return [
        {
            "names": list(names),
            "trials": ", ".join(map(str, sorted(set().union(*names.values())))),
            "reason": reason,
        }
        for reason, names in groups.items()
    ]
