"""The figures' shared look: sources' labels, colours, line styles and markers, axis and legend helpers,
panels, and writing a figure (``save``, with fixed metadata so the same inputs give the same bytes)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Mapping, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.lines import Line2D
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

from clipscale.table import data_size


# "released": the paper's released checkpoints evaluated by this pipeline (in our results table)
INPUT_OF_SOURCE = {"published": "published", "openai": "published", "ours": "ours", "ours-cooldown": "ours",
                   "released": "ours"}

SOURCE_LABELS = {"published": "OpenCLIP (LAION)", "openai": "OpenAI CLIP (WIT)", "ours": "ours",
                 "ours-cooldown": "ours, const LR + cooldown", "released": "released, re-evaluated"}
SOURCE_COLORS = {"published": "#D55E00", "openai": "#0072B2", "ours": "#B5006B", "ours-cooldown": "#E69F00",
                 "released": "#009E73"}
SOURCE_LINESTYLES = {"published": "-", "openai": "--", "ours": "-.", "ours-cooldown": (0, (1, 1)),
                     "released": ":"}
HOLLOW_SOURCES = ("ours-cooldown",)  # drawn as hollow markers in compute figures
KNOWN_DATA_COLORS = {"LAION-80M": "#1f77b4", "LAION-400M": "#ff7f0e", "LAION-2B": "#2ca02c",
                     "CLIP-WIT": "#000000"}
MARKERS = ["v", "o", "s", "P", "*", "D", "^", "X", "h", "<", ">", "p"]

DATASET_LABELS = {
    "imagenet1k": "ImageNet",
    "imagenet_robustness": "ImageNet robustness (avg. of 5 sets)",
    "vtab+": "VTAB+ (avg. of 35 tasks)",
    "vtab": "VTAB",
    "mscoco_captions": "MS-COCO",
    "flickr30k": "Flickr30K",
    "cifar100": "CIFAR-100",
    "cars": "Cars", "dtd": "DTD", "eurosat": "EuroSAT", "gtsrb": "GTSRB", "mnist": "MNIST",
    "resisc45": "RESISC45", "sun397": "SUN397", "svhn": "SVHN",
    "imagenet-real": "ImageNet-ReaL", "imagenetv2": "ImageNet-V2", "imagenet-a": "ImageNet-A",
    "imagenet-r": "ImageNet-R", "imagenet_sketch": "ImageNet-Sketch",
}
METRIC_LABELS = {
    "acc1": "zero-shot top-1",
    "image_retrieval_recall@5": "image retrieval R@5",
    "text_retrieval_recall@5": "text retrieval R@5",
    "lp_acc1": "linear probe top-1",
    "lp_acc1_full": "linear probe, full",
    "ft_acc1": "fine-tuned top-1",
    "imagenet_ft_acc1": "ImageNet-fine-tuned top-1",
    "imagenet_ft_acc1_in12k": "ImageNet-fine-tuned top-1 (ImageNet-12k first)",
    "patched_acc1": "patched top-1",
    "zeroshot_acc1": "zero-shot top-1 (the patching's heads)",
}

TITLE_FONTSIZE = 12
LABEL_FONTSIZE = 11


def dataset_label(name: str, ours: bool = False) -> str:
    """Readable name of a dataset; our sets keep their own names (ours may reuse "vtab+" as a
    group name without being the paper's VTAB+)."""
    return name if ours else DATASET_LABELS.get(name, name)


def metric_label(name: str) -> str:
    if name in METRIC_LABELS:
        return METRIC_LABELS[name]
    if name.startswith("lp_acc1_") and name.endswith("shot"):
        return f"linear probe, {name[len('lp_acc1_'):-len('shot')]}-shot"
    if "recall@" in name:
        return name.replace("_retrieval_recall@", " retrieval R@")
    return name


def error_label(metric: str) -> str:
    if "recall@" in metric:
        return f"100 − R@{metric.rsplit('@', 1)[1]} (%)"
    return "100 − top-1 accuracy (%)"


# ---------------------------------------------------------------------------------------------
# drawing helpers


def _style_maps(df: pd.DataFrame, data_sizes: Mapping[str, int] | None):
    data = _order_data(df, data_sizes)
    # the paper's sets keep the paper's colours; others (our scales) a sequential palette in
    # order of size, light (small) to dark (large)
    unknown = [d for d in data if d not in KNOWN_DATA_COLORS]
    cmap = plt.get_cmap("viridis")
    colors = {d: KNOWN_DATA_COLORS[d] for d in data if d in KNOWN_DATA_COLORS}
    for i, d in enumerate(unknown):
        colors[d] = cmap(0.85 - 0.7 * i / max(len(unknown) - 1, 1))
    models = (df.groupby("model")["gmac_per_sample"].median().sort_values().index.tolist())
    markers = {m: MARKERS[i % len(MARKERS)] for i, m in enumerate(models)}
    labels = _order_samples(df)
    sizes = {lab: s for lab, s in zip(labels, np.linspace(35, 160, max(len(labels), 1)))}
    return colors, markers, sizes


def _order_data(df: pd.DataFrame, data_sizes: Mapping[str, int] | None) -> list[str]:
    names = list(dict.fromkeys(df["data"]))
    known = dict(data_sizes or {})
    if "data_size" in df:
        for d, s in df.groupby("data")["data_size"].first().items():
            if pd.notna(s):
                known.setdefault(d, int(s))
    size = {d: data_size(d, known) for d in names}
    rank = {"published": 0, "released": 1, "ours": 2, "ours-cooldown": 2, "openai": 3}
    source = {d: min(rank.get(s, 3) for s in df.loc[df["data"] == d, "source"]) for d in names}
    return sorted(names, key=lambda d: (source[d], math.isnan(size[d]), 0 if math.isnan(size[d]) else size[d], d))


def _order_samples(df: pd.DataFrame) -> list[str]:
    med = df.groupby("samples_seen_label")["samples_seen"].median().sort_values()
    return med.index.tolist()


def _log_error_axis(ax, values: np.ndarray) -> None:
    ax.set_yscale("log")
    lo, hi = float(np.nanmin(values)), float(np.nanmax(values))
    span = math.log10(hi / lo) if lo > 0 and hi > lo else 0.0
    if span < 0.6:
        subs = (1.0, 1.5, 2.0, 2.5, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0)
    elif span < 1.2:
        subs = (1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 8.0)
    else:
        subs = (1.0, 2.0, 3.0, 5.0)
    ax.yaxis.set_major_locator(LogLocator(base=10, subs=subs))
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.yaxis.set_minor_formatter(NullFormatter())
    top = hi * 10 ** max(0.04, 0.08 * span)
    if hi <= 100:  # an error rate: fitted lines may overshoot 100 % at small compute
        top = min(top, 100.0 * 10 ** 0.02)
    ax.set_ylim(lo / 10 ** max(0.04, 0.08 * span), top)


def _grid(n_rows: int, n_cols: int, width: float = 5.2, height: float = 4.2):
    fig, axes = plt.subplots(n_rows, n_cols, figsize=(width * n_cols + 2.6, height * n_rows), squeeze=False)
    return fig, axes


_RUN_STYLE = {"hue": "data", "style": "model", "size": "samples_seen_label"}
_RUN_LEGEND_TITLES = {"data": "Training data", "model": "Model", "samples_seen_label": "Samples seen"}


def _run_points(rows: pd.DataFrame) -> pd.DataFrame:
    return rows.assign(error_pct=100 * rows["error"])


def _scatter_runs(ax, rows: pd.DataFrame, colors, markers, sizes) -> None:
    """One marker per run (seaborn): colour = training data, shape = model, size = samples seen;
    runs of HOLLOW_SOURCES (const-cooldown) hollow, in the colour of their data."""
    import seaborn as sns  # here: importing this module (the Snakefile does) stays quick

    for hollow in (False, True):
        part = rows[rows["source"].isin(HOLLOW_SOURCES) == hollow]
        if part.empty:
            continue
        sns.scatterplot(data=_run_points(part), x="total_gmac", y="error_pct", **_RUN_STYLE,
                        palette=colors, hue_order=list(colors), markers=markers, style_order=list(markers),
                        sizes=sizes, size_order=list(sizes), alpha=0.85, zorder=3, legend=False, ax=ax,
                        edgecolor="white", linewidth=0.6)
        if hollow:
            points = ax.collections[-1]
            points.set_edgecolors(points.get_facecolors())
            points.set_facecolors("none")
            points.set_linewidths(1.6)


def _side_legend_of_runs(fig, df: pd.DataFrame, colors, markers, sizes) -> None:
    """seaborn's legend of the run markers (data, model, samples seen; samples seen only when
    they vary), beside the panels, its section titles in bold."""
    import seaborn as sns  # here: importing this module (the Snakefile does) stays quick

    probe_fig, probe = plt.subplots()
    sns.scatterplot(data=_run_points(df), x="total_gmac", y="error_pct", **_RUN_STYLE, palette=colors,
                    hue_order=[d for d in colors if d in set(df["data"])], markers=markers,
                    style_order=[m for m in markers if m in set(df["model"])], sizes=sizes,
                    size_order=[s for s in sizes if s in set(df["samples_seen_label"])], legend="full", ax=probe)
    handles, labels = probe.get_legend_handles_labels()
    plt.close(probe_fig)
    keep_sizes = df["samples_seen_label"].nunique() > 1
    out_h, out_l, section = [], [], None
    for h, lab in zip(handles, labels):
        if lab in _RUN_LEGEND_TITLES:
            section = lab
            if section == "samples_seen_label" and not keep_sizes:
                continue
            out_h.append(Line2D([], [], linestyle=""))
            out_l.append(_RUN_LEGEND_TITLES[lab])
        elif section != "samples_seen_label" or keep_sizes:
            out_h.append(h)
            out_l.append(lab)
    leg = fig.legend(out_h, out_l, loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False,
                     fontsize=9, handletextpad=0.4, borderaxespad=0.2)
    for text, lab in zip(leg.get_texts(), out_l):
        if lab in _RUN_LEGEND_TITLES.values():
            text.set_fontweight("bold")


def _title(fig, title: str | None) -> None:
    """Lay the panels out, leaving room above them for the figure's title (tight_layout alone
    puts the first row's titles under it on a tall figure)."""
    fig.tight_layout()
    if title:
        height = fig.get_figheight()  # inches: a title line is about 0.3
        fig.suptitle(title, fontsize=TITLE_FONTSIZE + 2, y=1 - 0.08 / height, va="top")
        fig.subplots_adjust(top=fig.subplotpars.top - 0.4 / height)


def save(fig, outputs: Sequence[str | Path], dpi: int = 150) -> None:
    """Write a figure to each output (format from the suffix: .pdf, .png, .svg)."""
    for out in outputs:
        out = Path(out)
        out.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(out, dpi=dpi, bbox_inches="tight", metadata=_metadata(out.suffix))
    plt.close(fig)


def _metadata(suffix: str) -> dict:
    # fixed metadata so that the same inputs give the same bytes
    if suffix == ".pdf":
        return {"CreationDate": None, "Producer": "clipscale"}
    if suffix == ".png":
        return {"Software": "clipscale"}
    if suffix == ".svg":
        return {"Date": None}
    return {}
