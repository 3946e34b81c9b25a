"""Training curves (each run's losses.csv) and learning curves (every checkpoint's error)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

from clipscale.figures.specs import FigureError
from clipscale.figures.style import (LABEL_FONTSIZE, TITLE_FONTSIZE, _grid, _log_error_axis, _title, dataset_label,
                                     error_label, save)


# ---------------------------------------------------------------------------------------------
# training curves (losses.csv of each run) and learning curves (every checkpoint's error)

#: steps of the rolling mean drawn over each run's per-step training loss
LOSS_SMOOTHING = 10


def read_losses(run_records: Iterable[str | Path]) -> pd.DataFrame:
    """Every run's training loss from the ``losses.csv`` beside its run.json: one row per step
    (a step trained again after a resume counts with its last value) with the run's name, model
    label, data, samples seen label, schedule, and ``samples_seen`` = (step + 1) x the global
    batch. A const-cooldown branch's file starts at its trunk's checkpoint."""
    from clipscale.train.records import LOSSES_NAME

    frames = []
    for record_path in run_records:
        record_path = Path(record_path)
        record = __import__("json").loads(record_path.read_text())
        path = record_path.parent / LOSSES_NAME
        if not path.exists():
            raise FigureError(f"training curves: {path} (the losses of {record_path}) does not exist")
        losses = pd.read_csv(path, header=None, names=["step", "loss"], dtype={"step": "Int64"})
        losses = losses.dropna().drop_duplicates("step", keep="last").sort_values("step")
        frames.append(losses.assign(
            run=str(record_path.parent), model=record.get("model_label") or record["model"],
            data=record["scale"], samples_seen_label=record["samples_seen_label"],
            schedule=record.get("schedule", "cosine"), gmac_per_sample=record.get("gmac_per_sample", np.nan),
            samples_seen=(losses["step"].astype("int64") + 1) * int(record["global_batch_size"])))
    if not frames:
        raise FigureError("training curves: no runs")
    return pd.concat(frames, ignore_index=True)


def _curve_panels(df: pd.DataFrame, order_by: str):
    """Models in order of ``order_by`` (compute per sample), a panel each; the data scales'
    colours (light: small, dark: large) and the samples-seen labels' order."""
    models = df.groupby("model")[order_by].median().sort_values().index.tolist()
    data = list(dict.fromkeys(df.sort_values("data_size")["data"]))
    cmap = plt.get_cmap("viridis")
    colors = {d: cmap(0.85 - 0.7 * i / max(len(data) - 1, 1)) for i, d in enumerate(data)}
    samples = df.groupby("samples_seen_label")["run_samples"].max().sort_values().index.tolist()
    n_cols = min(len(models), 3)
    n_rows = math.ceil(len(models) / n_cols)
    fig, axes = _grid(n_rows, n_cols, width=4.6, height=3.9)
    for j in range(len(models), n_rows * n_cols):
        axes[j // n_cols][j % n_cols].set_visible(False)
    return fig, [axes[i // n_cols][i % n_cols] for i in range(len(models))], models, data, colors, samples


def _samples_axis(ax) -> None:
    """A log axis of samples seen, its ticks as counts (2k, 10k, 1M); no minor tick labels."""
    from clipscale.config import format_count

    ax.set_xscale("log")
    ax.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: format_count(int(round(v))) if v >= 1 else f"{v:g}"))
    ax.xaxis.set_minor_formatter(NullFormatter())


def _curve_legend(ax, last: bool) -> None:
    """One legend, beside the last panel (the panels share colours and line styles)."""
    handles, names = ax.get_legend_handles_labels()
    if ax.get_legend() is not None:
        ax.get_legend().remove()
    if last:
        titles = {"data": "Training data", "samples_seen_label": "Samples seen (run)"}
        ax.legend(handles, [titles.get(n, n) for n in names], fontsize=9, loc="upper left",
                  bbox_to_anchor=(1.02, 1.0), frameon=False)


def draw_training_curves(losses: pd.DataFrame, scales: Mapping[str, int] | None = None,
                         labels: Mapping[str, str] | None = None, smooth: int = LOSS_SMOOTHING):
    """Training loss against samples seen: a panel per model, a line per run (colour: the data
    scale; line style: the run's samples seen), a rolling mean over ``smooth`` steps."""
    import seaborn as sns  # here: importing this module (the Snakefile does) stays quick

    df = losses.copy()
    df["model"] = df["model"].map(lambda m: (labels or {}).get(m, m))
    df["data_size"] = df["data"].map(lambda d: (scales or {}).get(d, np.nan))
    df["run_samples"] = df.groupby("run")["samples_seen"].transform("max")
    df["loss_smooth"] = df.groupby("run")["loss"].transform(lambda s: s.rolling(smooth, min_periods=1).mean())
    fig, axes, models, data, colors, samples = _curve_panels(df, "gmac_per_sample")  # small models first
    for ax, model in zip(axes, models):
        sub = df[df["model"] == model]
        sns.lineplot(data=sub, x="samples_seen", y="loss_smooth", hue="data", hue_order=[d for d in data if d in set(sub["data"])],
                     palette=colors, style="samples_seen_label",
                     style_order=[s for s in samples if s in set(sub["samples_seen_label"])],
                     units="run", estimator=None, sort=True, lw=1.4, ax=ax)
        _samples_axis(ax)
        ax.set_xlabel("Samples seen", fontsize=LABEL_FONTSIZE)
        ax.set_ylabel(f"Training loss (mean of {smooth} steps)", fontsize=LABEL_FONTSIZE)
        ax.set_title(model, fontsize=TITLE_FONTSIZE)
        ax.grid(True, alpha=0.3)
        _curve_legend(ax, last=ax is axes[-1])
    _title(fig, "Training loss of our runs")
    return fig


def draw_learning_curves(table: pd.DataFrame, dataset: str, metric: str = "acc1",
                         sources: Sequence[str] = ("ours", "ours-cooldown"),
                         task: str = "zeroshot_classification"):
    """The main task's error against samples seen at every evaluated checkpoint of each run
    (evaluate.all_checkpoints): a panel per model, a line per run through its checkpoints
    (colour: data scale, line style: the run's samples seen), where the bottlenecks form."""
    import seaborn as sns

    df = table[table["source"].isin(sources) & (table["dataset"] == dataset) & (table["metric"] == metric)
               & (table["task"] == task)].copy()
    if df.empty:
        raise FigureError(f"learning curves: no rows of {task} {metric} on {dataset} from {list(sources)}")
    # a run: its checkpoints' folder (results/train/<model>/<scale>/<samples>/openclip/checkpoints)
    df["run"] = df["checkpoint"].map(lambda c: str(Path(c).parent))
    final = df[df["final"]].set_index("run")["samples_seen_label"]
    df["run_samples"] = df.groupby("run")["samples_seen"].transform("max")
    df["samples_seen_label"] = df["run"].map(final).fillna(df["samples_seen_label"])
    if "data_size" not in df:
        df["data_size"] = np.nan
    df["error_pct"] = 100 * df["error"]
    several = df.groupby("run").size().max() > 1
    fig, axes, models, data, colors, samples = _curve_panels(df, "gmac_per_sample")
    for ax, model in zip(axes, models):
        sub = df[df["model"] == model].sort_values("samples_seen")
        sns.lineplot(data=sub, x="samples_seen", y="error_pct", hue="data",
                     hue_order=[d for d in data if d in set(sub["data"])], palette=colors,
                     style="samples_seen_label", style_order=[s for s in samples if s in set(sub["samples_seen_label"])],
                     units="run", estimator=None, sort=True, marker="o", markersize=5, lw=1.6, ax=ax)
        _samples_axis(ax)
        _log_error_axis(ax, sub["error_pct"].to_numpy())
        ax.set_xlabel("Samples seen (at the checkpoint)", fontsize=LABEL_FONTSIZE)
        ax.set_ylabel(error_label(metric), fontsize=LABEL_FONTSIZE)
        ax.set_title(model, fontsize=TITLE_FONTSIZE)
        ax.grid(True, alpha=0.3)
        _curve_legend(ax, last=ax is axes[-1])
    what = "every checkpoint" if several else "final checkpoints only (evaluate.all_checkpoints: false)"
    _title(fig, f"Learning curves: zero-shot {dataset_label(dataset, True)}, {what}")
    return fig


def make_training_curves(settings: Mapping, run_records: Sequence[str], outputs: Sequence[str]) -> None:
    """Rule figure_training_curves: ``settings`` from clipscale.shaping.training_curves."""
    fig = draw_training_curves(read_losses(run_records), settings.get("scales"), settings.get("labels"),
                               settings.get("smooth", LOSS_SMOOTHING))
    save(fig, outputs)


def make_learning_curves(settings: Mapping, table: str, outputs: Sequence[str]) -> None:
    """Rule figure_learning_curves: ``settings`` from clipscale.shaping.learning_curves."""
    from clipscale.table import read_table

    fig = draw_learning_curves(read_table(table), settings["dataset"], settings.get("metric", "acc1"),
                               settings["sources"])
    save(fig, outputs)
