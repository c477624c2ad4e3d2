"""The report's plots (seaborn on matplotlib's Agg backend), one PNG each, written next to index.html.

Each ``plot_*`` function takes the extracted data and the output folder and returns ``Figure`` records,
or raises ``Skip`` with the reason a plot is missing or would carry no information (the page says why).
Every axis names its unit (``harness.report.data.metric_label``); with few trials per level, points and the
mean with its 95% t interval replace box plots (a box over two points draws quartiles that do not exist).
"""

from __future__ import annotations

import re
import warnings
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # before pyplot: no display, no GUI toolkit

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402
from matplotlib.ticker import FuncFormatter, LogLocator, MaxNLocator, NullFormatter  # noqa: E402

from harness.paths import slug  # noqa: E402
from harness.report.data import PERCENT_METRICS, metric_label, pareto_mask  # noqa: E402
from harness.report.stats import t_interval  # noqa: E402
from harness.report.tables import StudyTables  # noqa: E402
from harness.report.timing import all_same_network, loaded  # noqa: E402

DPI = 96
BOX_MIN_N = 5  # fewer trials per level: points and mean +- 95% t interval instead of a box


def log_scale(ax, which: str, values, base: float = 10) -> bool:
    """A log axis with plain-text tick labels (the report renders with math text off, since labels come from the
    database, and matplotlib's default log labels are math text), when ``values`` are positive and span at
    least two powers of ``base``; otherwise the axis stays linear, where matplotlib places several labelled
    ticks (a log axis inside one decade shows a single label). Returns whether the axis is logarithmic."""
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    if not len(v) or v.min() <= 0:
        return False
    logs = np.log(v) / np.log(base)
    powers = np.floor(logs.max() + 1e-9) - np.ceil(logs.min() - 1e-9) + 1  # powers of base inside the range
    if powers < 2:
        return False
    (ax.set_xscale if which == "x" else ax.set_yscale)("log", base=base)
    axis = ax.xaxis if which == "x" else ax.yaxis
    if powers < 3:  # two powers only: label 1-2-5 steps as well
        axis.set_major_locator(LogLocator(base=base, subs=(1.0, 2.0, 5.0)))
    axis.set_major_formatter(FuncFormatter(lambda x, _: f"{x:g}"))
    axis.set_minor_formatter(NullFormatter())
    return True


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


def _means_with_ci(ax, data: pd.DataFrame, x: str, y: str, order: list[str], horizontal: bool = False) -> None:
    """Black diamonds: the mean per category, error bars: its 95% Student-t interval (none for n < 2)."""
    for i, level in enumerate(order):
        mean, _, low, high = t_interval(data.loc[data[x] == level, y])
        if np.isnan(mean):
            continue
        err = [[mean - low], [high - mean]] if not np.isnan(low) else None
        kw = {"fmt": "D", "color": "k", "ms": 6, "capsize": 5, "lw": 1.5, "zorder": 5}
        if horizontal:
            ax.errorbar(mean, i + 0.25, xerr=err, **kw, label="mean, 95% t interval" if i == 0 else None)
        else:
            ax.errorbar(i + 0.3, mean, yerr=err, **kw, label="mean, 95% t interval" if i == 0 else None)


def plot_effects(tables: StudyTables, frame: pd.DataFrame, out: Path) -> list[Figure]:
    """Per factor and objective: every trial as a point (colour: seed, or basis), with a box per level when
    each level has at least BOX_MIN_N trials, else the mean and its 95% t interval beside the points."""
    figures = []
    for objective in tables.objectives:
        metric = objective["metric"]
        rows = _complete(frame, metric)
        basis_hue, warning = _basis_warning(tables, rows, metric)
        for factor in tables.factors:
            data = rows.assign(level=rows[factor].astype(str))
            order = [lv for lv in tables.levels.get(factor, []) if lv in set(data["level"])]
            hue = basis_hue or tables.seed_key
            boxes = data["level"].value_counts().min() >= BOX_MIN_N
            fig, ax = plt.subplots(figsize=(max(4.5, 1.8 * len(order) + 2.5), 3.8))
            if boxes:
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
                jitter=0.12,
                size=6,
                ax=ax,
            )
            if not boxes:
                _means_with_ci(ax, data, "level", metric, order)
            if ax.get_legend() is not None or not boxes:
                ax.legend(title="basis" if basis_hue else hue, fontsize=7, title_fontsize=8, loc="best")
            ax.set_xlabel(f"{factor} (base: {order[0] if order else '-'})")
            better = "lower" if objective["direction"] == "minimize" else "higher"
            ax.set_ylabel(f"{metric_label(tables, metric)}, {better} is better")
            ax.tick_params(axis="x", labelrotation=15)
            file = _save(fig, out, f"effect_{factor}_{metric}")
            how = (
                "Box: quartiles over complete trials; points: one per trial (colour: seed)."
                if boxes
                else f"Points: one per trial (colour: seed); black: the mean with its 95% t interval (no box: fewer "
                f"than {BOX_MIN_N} trials per level)."
            )
            figures.append(Figure(file, f"{metric} by {factor}", how, warning))
    return figures


def plot_pareto(tables: StudyTables, frame: pd.DataFrame, out: Path) -> list[Figure]:
    """Objective vs FLOPs per image; configuration means, the Pareto front joined by a line. Skipped when every
    configuration has the same FLOPs (there is no cost to trade against)."""
    figures = []
    for objective in tables.objectives:
        metric = objective["metric"]
        rows = _complete(frame, metric)
        if "flops_per_image" not in rows.columns or rows["flops_per_image"].isna().all():
            raise Skip("no complete trial recorded flops_per_image")
        rows = rows[rows["flops_per_image"].notna()]
        flops = rows["flops_per_image"].astype(float)
        if flops.round(6).nunique() == 1:
            raise Skip(
                f"every configuration has the same FLOPs per image ({flops.iloc[0]:.4g}): there is no cost axis, so "
                "the plot would only repeat the effects above"
            )
        _, warning = _basis_warning(tables, rows, metric)
        scale, prefix = _prefix(flops.max())
        rows = rows.assign(flops_per_image=flops / scale)
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
        log_scale(ax, "x", means["flops_per_image"])
        ax.set_xlabel(f"{prefix}FLOP per image (forward pass; convention in the metric's attrs)")
        ax.set_ylabel(metric_label(tables, metric))
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


def _prefix(value: float) -> tuple[float, str]:
    """(scale, SI prefix) that brings ``value`` into [1, 1000): 3.1e9 -> (1e9, "G")."""
    for scale, prefix in ((1e15, "P"), (1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if value >= scale:
            return scale, prefix
    return 1.0, ""


def plot_throughput(tables: StudyTables, frame: pd.DataFrame, out: Path) -> list[Figure]:
    """Throughput and MFU per configuration: every trial as a point (red crosses: timed under load), the mean
    and its 95% t interval. Skipped when every configuration runs the same network (speed cannot differ by
    design: a difference would be the machine's, not an effect)."""
    present = [m for m in ("train_images_per_s", "sample_images_per_s", "mfu") if m in frame and frame[m].notna().any()]
    if not present:
        raise Skip("no trial recorded train_images_per_s, sample_images_per_s or mfu")
    rows = frame[frame["state"] == "complete"]
    if all_same_network(rows):
        raise Skip(
            "every configuration runs the same network (same FLOPs per image and parameters), so throughput and MFU "
            "cannot differ between them by design; differences would be machine noise, not effects (figures: the "
            "Timing table)"
        )
    order = list(dict.fromkeys(rows["config"]))
    fig, axes = plt.subplots(1, len(present), figsize=(4.5 * len(present) + 3, 0.55 * len(order) + 1.8), squeeze=False)
    n_loaded = 0
    for i, (ax, metric) in enumerate(zip(axes[0], present, strict=True)):
        data = rows[rows[metric].notna()].assign(value=lambda d, m=metric: d[m] * (100 if m in PERCENT_METRICS else 1))
        hot = loaded(data, metric)
        n_loaded = max(n_loaded, int(hot.sum()))
        position = data["config"].map({c: k for k, c in enumerate(order)})
        ax.scatter(data.loc[~hot, "value"], position[~hot], color="#4c72b0", s=22, label="trial")
        if hot.any():
            ax.scatter(data.loc[hot, "value"], position[hot], color="#c0392b", marker="x", s=40, label="under load")
        _means_with_ci(ax, data, "config", "value", order, horizontal=True)
        ax.set_yticks(range(len(order)), order if i == 0 else [""] * len(order))  # labelled once, on the left
        ax.set_ylim(len(order) - 0.5, -0.5)
        ax.set_xlabel(metric_label(tables, metric))
        if i == len(present) - 1:
            ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    fig.tight_layout()
    warning = (
        f"Measured under load: up to {n_loaded} trials per panel (red crosses) were timed while other processes "
        "used the cores they needed; their speed is not the configuration's."
        if n_loaded
        else ""
    )
    return [
        Figure(
            _save(fig, out, "throughput"),
            "Throughput and MFU per configuration",
            "Points: trials; black: the mean with its 95% t interval. Compare configurations whose networks differ; "
            "the Timing table says which differences exceed the noise.",
            warning,
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
        ax.set_xlabel("training step")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel("training loss (mean per logged interval)")
        log_scale(ax, "y", train["value"])
        ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
        figures.append(Figure(_save(fig, out, "train_loss"), "Training loss", "One line per trial."))
    if val is not None and len(val):
        fig, ax = plt.subplots(figsize=(7, 4))
        sns.lineplot(data=val, x="x", y="value", hue="config", marker="o", errorbar="sd", ax=ax)
        ax.set_xlabel("logSNR (bucket midpoint)")
        ax.set_ylabel(metric_label(tables, "val_loss_by_logsnr"))
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
    if len(levels) < 2:
        raise Skip(f"one pyramid level only ({levels[0][0]} px): its SWD is the SWD already shown per factor")
    long = rows.melt(
        id_vars=["trial_number", "config"], value_vars=[c for _, c in levels], var_name="level", value_name="swd_value"
    ).dropna(subset=["swd_value"])
    long["resolution"] = long["level"].str.split("_").str[1].astype(int)
    fig, ax = plt.subplots(figsize=(7, 4))
    sns.lineplot(data=long, x="resolution", y="swd_value", hue="config", marker="o", errorbar="sd", ax=ax)
    ax.set_ylabel(metric_label(tables, "swd"))
    ax.set_xscale("log", base=2)
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xticks([r for r, _ in levels], [str(r) for r, _ in levels])
    ax.set_xlabel("pyramid level resolution (px; low: global structure, high: detail)")
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
    order = list(importances.groupby("param")["importance"].mean().sort_values(ascending=False).index)
    size = (4 * n + 2, 0.4 * len(order) + 1.5)
    fig, axes = plt.subplots(1, n, figsize=size, squeeze=False, sharey=True)  # parameters labelled once, left
    for ax, (objective, group) in zip(axes[0], importances.groupby("objective", sort=False), strict=True):
        sns.barplot(data=group, x="importance", y="param", order=order, color="#d99f8f", ax=ax)
        ax.set_title(objective)
        ax.set_xlabel("importance (fraction of 1)")
        ax.set_ylabel("")
    fig.tight_layout()
    return [
        Figure(
            _save(fig, out, "importances"),
            "Optuna parameter importances",
            "Optuna's default evaluator, normalised to sum to 1 per objective.",
        )
    ]
