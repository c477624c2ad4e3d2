"""The report's plots (seaborn on matplotlib's Agg backend), one PNG each, written next to index.html.

Each ``plot_*`` function takes the extracted data and the output folder and returns ``Figure`` records,
or raises ``Skip`` with the reason a plot is missing (the page says why).
"""

from __future__ import annotations

import re
import warnings
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # before pyplot: no display, no GUI toolkit

import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402
from matplotlib.ticker import FuncFormatter, NullFormatter  # noqa: E402

from harness.report.data import pareto_mask  # noqa: E402
from harness.study import slug  # noqa: E402
from harness.summaries import StudyTables  # noqa: E402

DPI = 96


def log_scale(ax, which: str, base: float = 10) -> None:
    """A log axis with plain-text tick labels (the report renders with math text off, since labels come
    from the database, and matplotlib's default log labels are math text)."""
    (ax.set_xscale if which == "x" else ax.set_yscale)("log", base=base)
    axis = ax.xaxis if which == "x" else ax.yaxis
    axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    axis.set_minor_formatter(NullFormatter())


@dataclass
class Figure:
    file: str  # PNG file name, relative to the report folder
    title: str
    caption: str = ""
    warning: str = ""  # non-empty: shown in red above the plot (e.g. mixed FID bases)


class Skip(Exception):
    """A plot cannot be drawn; the message says why."""


def _save(fig: plt.Figure, out: Path, name: str) -> str:
    file = f"{slug(name)}.png"
    fig.savefig(out / file, dpi=DPI, bbox_inches="tight")
    plt.close(fig)
    return file


def _complete(frame: pd.DataFrame, metric: str) -> pd.DataFrame:
    if metric not in frame.columns:
        raise Skip(f"no trial recorded {metric!r}")
    rows = frame[(frame["state"] == "complete") & pd.to_numeric(frame[metric], errors="coerce").notna()]
    if rows.empty:
        raise Skip(f"no complete trial has a value of {metric!r}")
    return rows


def _basis_warning(tables: StudyTables, rows: pd.DataFrame, metric: str) -> tuple[str | None, str]:
    """(hue column or None, warning) when ``rows`` mix bases of a guarded metric."""
    column = f"{metric}_basis"
    if column in rows.columns and rows[column].dropna().nunique() > 1:
        return column, (
            f"{metric.upper()} values below were computed on different bases (sample counts or "
            f"reference sets) and are not comparable; points are coloured by basis."
        )
    return None, ""


def plot_effects(tables: StudyTables, frame: pd.DataFrame, out: Path) -> list[Figure]:
    """Per factor and objective: a box per level, every trial as a point, coloured by seed (or basis)."""
    figures = []
    for objective in tables.objectives:
        metric = objective["metric"]
        rows = _complete(frame, metric)
        basis_hue, warning = _basis_warning(tables, rows, metric)
        for factor in tables.factors:
            data = rows.assign(level=rows[factor].astype(str))
            order = [lv for lv in tables.levels.get(factor, []) if lv in set(data["level"])]
            hue = basis_hue or tables.seed_key
            fig, ax = plt.subplots(figsize=(max(4.0, 1.6 * len(order) + 2), 3.6))
            with warnings.catch_warnings():  # seaborn 0.13 passes matplotlib 3.11's deprecated ``vert``
                warnings.simplefilter("ignore", matplotlib.MatplotlibDeprecationWarning)
                sns.boxplot(data=data, x="level", y=metric, order=order, color="0.9", showfliers=False, ax=ax)
            sns.stripplot(
                data=data,
                x="level",
                y=metric,
                order=order,
                hue=data[hue].astype(str) if hue else None,
                dodge=False,
                jitter=0.15,
                size=6,
                ax=ax,
            )
            if hue and ax.get_legend() is not None:
                ax.legend(title="basis" if basis_hue else hue, fontsize=7, title_fontsize=8, loc="best")
            ax.set_xlabel(f"{factor} (base: {order[0] if order else '-'})")
            ax.set_ylabel(f"{metric} ({'lower' if objective['direction'] == 'minimize' else 'higher'} is better)")
            ax.tick_params(axis="x", labelrotation=15)
            file = _save(fig, out, f"effect_{factor}_{metric}")
            figures.append(
                Figure(
                    file,
                    f"{metric} by {factor}",
                    "Box: quartiles over complete trials; points: one per trial (colour: seed).",
                    warning,
                )
            )
    return figures


def plot_pareto(tables: StudyTables, frame: pd.DataFrame, out: Path) -> list[Figure]:
    """Objective vs FLOPs per image; configuration means, the Pareto front joined by a line."""
    figures = []
    for objective in tables.objectives:
        metric = objective["metric"]
        rows = _complete(frame, metric)
        if "flops_per_image" not in rows.columns or rows["flops_per_image"].isna().all():
            raise Skip("no complete trial recorded flops_per_image")
        rows = rows[rows["flops_per_image"].notna()]
        _, warning = _basis_warning(tables, rows, metric)
        means = rows.groupby("config", sort=False)[["flops_per_image", metric]].mean().reset_index()
        means["pareto"] = pareto_mask(means["flops_per_image"], means[metric], objective["direction"])
        means["mean of"] = means["pareto"].map({True: "on the front", False: "dominated"})
        fig, ax = plt.subplots(figsize=(7, 4.2))
        sns.scatterplot(data=rows, x="flops_per_image", y=metric, hue="config", alpha=0.45, s=30, ax=ax, legend=False)
        sns.scatterplot(
            data=means,
            x="flops_per_image",
            y=metric,
            hue="config",
            style="mean of",
            s=110,
            markers={"on the front": "*", "dominated": "o"},
            ax=ax,
        )
        front = means[means["pareto"]].sort_values("flops_per_image")
        ax.plot(front["flops_per_image"], front[metric], "k--", lw=1, label="Pareto front")
        if means["flops_per_image"].min() > 0:
            log_scale(ax, "x")
        ax.set_xlabel("FLOPs per image (convention: see the metric's attrs)")
        ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
        file = _save(fig, out, f"pareto_{metric}")
        figures.append(
            Figure(
                file,
                f"{metric} vs FLOPs per image",
                "Small points: trials; large: configuration "
                "means; stars and dashed line: the Pareto front of the means.",
                warning,
            )
        )
    return figures


def plot_throughput(tables: StudyTables, frame: pd.DataFrame, out: Path) -> list[Figure]:
    """Training images/s and MFU per configuration (bar: mean over seeds, error bar: sd, points: trials)."""
    present = [m for m in ("train_images_per_s", "mfu") if m in frame.columns and frame[m].notna().any()]
    if not present:
        raise Skip("no trial recorded train_images_per_s or mfu")
    rows = frame[frame["state"] == "complete"]
    fig, axes = plt.subplots(
        1, len(present), figsize=(5 * len(present) + 3, 0.5 * rows["config"].nunique() + 1.5), squeeze=False
    )
    for i, (ax, metric) in enumerate(zip(axes[0], present, strict=True)):
        sns.barplot(data=rows, y="config", x=metric, errorbar="sd", color="#8fb3d9", ax=ax)
        sns.stripplot(data=rows, y="config", x=metric, color="k", size=4, ax=ax)
        ax.set_ylabel("")
        if i:  # the configurations are labelled once, on the left
            ax.tick_params(labelleft=False)
    fig.tight_layout()
    return [
        Figure(
            _save(fig, out, "throughput"),
            "Training throughput and MFU per configuration",
            "Bars: mean over seeds; error bars: standard deviation; points: trials.",
        )
    ]


def plot_losses(tables: StudyTables, curves: dict[str, pd.DataFrame], out: Path) -> list[Figure]:
    """Training loss curves (one line per trial) and validation loss per logSNR bucket."""
    figures = []
    train, val = curves.get("train_loss"), curves.get("val_loss_by_logsnr")
    if train is not None and len(train):
        fig, ax = plt.subplots(figsize=(7, 4))
        sns.lineplot(
            data=train, x="step", y="value", hue="config", units="trial_number", estimator=None, lw=1, alpha=0.8, ax=ax
        )
        ax.set_ylabel("training loss")
        if (train["value"] > 0).all():
            log_scale(ax, "y")
        ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
        figures.append(Figure(_save(fig, out, "train_loss"), "Training loss", "One line per trial."))
    if val is not None and len(val):
        fig, ax = plt.subplots(figsize=(7, 4))
        sns.lineplot(data=val, x="x", y="value", hue="config", marker="o", errorbar="sd", ax=ax)
        ax.set_xlabel("logSNR (bucket midpoint)")
        ax.set_ylabel("validation loss")
        ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
        figures.append(
            Figure(
                _save(fig, out, "val_loss_by_logsnr"),
                "Validation loss per logSNR bucket",
                "Mean over seeds; band: standard deviation.",
            )
        )
    if not figures:
        raise Skip("no loss curve recorded yet")
    return figures


def plot_swd_levels(tables: StudyTables, frame: pd.DataFrame, out: Path) -> list[Figure]:
    """SWD per Laplacian-pyramid level per configuration: low resolutions = global structure."""
    levels = sorted((int(c.split("_")[1]), c) for c in frame.columns if re.fullmatch(r"swd_\d+", str(c)))
    rows = frame[frame["state"] == "complete"]
    if not levels or rows.empty:
        raise Skip("no trial recorded per-level SWD (swd_16, swd_32, ...)")
    long = rows.melt(
        id_vars=["trial_number", "config"], value_vars=[c for _, c in levels], var_name="level", value_name="swd_value"
    ).dropna(subset=["swd_value"])
    long["resolution"] = long["level"].str.split("_").str[1].astype(int)
    fig, ax = plt.subplots(figsize=(7, 4))
    sns.lineplot(data=long, x="resolution", y="swd_value", hue="config", marker="o", errorbar="sd", ax=ax)
    ax.set_ylabel("SWD")
    log_scale(ax, "x", base=2)
    ax.set_xticks([r for r, _ in levels], [str(r) for r, _ in levels])
    ax.set_xlabel("pyramid level resolution (low: global structure, high: detail)")
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    return [
        Figure(
            _save(fig, out, "swd_levels"),
            "Sliced Wasserstein distance per pyramid level",
            "Mean over seeds; band: standard deviation.",
        )
    ]


def plot_importances(importances: pd.DataFrame, out: Path) -> list[Figure]:
    n = importances["objective"].nunique()
    fig, axes = plt.subplots(1, n, figsize=(5 * n, 0.4 * importances["param"].nunique() + 1.5), squeeze=False)
    for ax, (objective, group) in zip(axes[0], importances.groupby("objective", sort=False), strict=True):
        sns.barplot(
            data=group.sort_values("importance", ascending=False), x="importance", y="param", color="#d99f8f", ax=ax
        )
        ax.set_title(objective)
        ax.set_ylabel("")
    return [
        Figure(
            _save(fig, out, "importances"),
            "Optuna parameter importances",
            "Optuna's default evaluator, normalised to sum to 1 per objective.",
        )
    ]
