"""Bottleneck plots: error against samples seen or data size, one panel per model."""

from __future__ import annotations

import math
from typing import Mapping

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import pandas as pd

from clipscale.figures.panels import _dashes, _panels, _select
from clipscale.figures.specs import FigureError, FigureSpec
from clipscale.figures.style import (LABEL_FONTSIZE, SOURCE_LABELS, SOURCE_LINESTYLES, TITLE_FONTSIZE, _grid,
                                     _order_data, _order_samples, _style_maps, _title, dataset_label, error_label,
                                     metric_label)


def _bottleneck_models(df: pd.DataFrame, spec: FigureSpec) -> list[str]:
    order = df.groupby("model")["gmac_per_sample"].median().sort_values().index.tolist()
    keep = [m for m in order
            if df.loc[df["model"] == m, "data"].nunique() >= 2 and df.loc[df["model"] == m, "samples_seen_label"].nunique() >= 2]
    if not keep:
        raise FigureError(
            f"figure {spec.name!r}: no model has runs at two data scales and two samples-seen values "
            f"(models: {order})"
        )
    return keep


def draw_bottleneck(spec: FigureSpec, tables: Mapping[str, pd.DataFrame], data_sizes: Mapping[str, int] | None = None):
    import seaborn as sns  # here: importing this module (the Snakefile does) stays quick

    df = _select(spec, tables)
    panels = _panels(spec, df)
    dataset, metric = panels[0]
    df = df[(df["dataset"] == dataset) & (df["metric"] == metric)]
    models = _bottleneck_models(df, spec)
    colors, markers, _ = _style_maps(df, data_sizes)
    data_order = _order_data(df, data_sizes)
    sample_order = _order_samples(df)
    n_cols = min(len(models), 3)
    n_rows = math.ceil(len(models) / n_cols)
    fig, axes = _grid(n_rows, n_cols, width=4.6, height=3.9)
    by_samples = spec.kind == "data_bottleneck"  # x = samples seen, one line per data scale
    x_order = sample_order if by_samples else data_order
    line_key, line_order = ("data", data_order) if by_samples else ("samples_seen_label", sample_order)
    cmap = plt.get_cmap("viridis")
    line_colors = ({d: colors[d] for d in data_order} if by_samples else
                   {s: cmap(0.15 + 0.7 * i / max(len(sample_order) - 1, 1)) for i, s in enumerate(sample_order)})
    for i, model in enumerate(models):
        ax = axes[i // n_cols][i % n_cols]
        sub = df[(df["model"] == model) & df[line_key].isin(line_order)]
        xcol = "samples_seen_label" if by_samples else "data"
        pts = sub.assign(_x=sub[xcol].map({v: j for j, v in enumerate(x_order)}), error_pct=100 * sub["error"],
                         source_label=sub["source"].map(lambda s: SOURCE_LABELS.get(s, s))).sort_values("_x")
        several = pts["source"].nunique() > 1  # a line style per source
        # a line per data scale (or samples seen), through its runs in x order (no estimate)
        sns.lineplot(data=pts, x="_x", y="error_pct", hue=line_key,
                     hue_order=[k for k in line_order if k in set(pts[line_key])], palette=line_colors,
                     style="source_label" if several else None,
                     dashes={SOURCE_LABELS.get(s, s): _dashes(SOURCE_LINESTYLES[s]) for s in spec.sources}
                     if several else True,
                     estimator=None, sort=False, marker=markers[model], markersize=7, lw=2, ax=ax)
        ax.set_xticks(range(len(x_order)))
        ax.set_xticklabels(x_order)
        ax.set_xlim(-0.3, len(x_order) - 0.7)
        ax.set_xlabel("Samples seen" if by_samples else "Training data", fontsize=LABEL_FONTSIZE)
        ax.set_ylabel(error_label(metric), fontsize=LABEL_FONTSIZE)
        ax.set_title(model, fontsize=TITLE_FONTSIZE)
        ax.grid(True, alpha=0.3)
        # seaborn's legend, its section titles renamed: the hue's is the legend's title
        handles, labels = ax.get_legend_handles_labels()
        keep = [(h, "Runs" if lab == "source_label" else lab) for h, lab in zip(handles, labels) if lab != line_key]
        leg = ax.legend([h for h, _ in keep], [lab for _, lab in keep], fontsize=9, title_fontsize=9,
                        title="Training data" if by_samples else "Samples seen")
        for text in leg.get_texts():
            if text.get_text() == "Runs":
                text.set_fontweight("bold")
    for j in range(len(models), n_rows * n_cols):
        axes[j // n_cols][j % n_cols].set_visible(False)
    _title(fig, spec.title or f"{dataset_label(dataset, 'ours' in spec.inputs)}, {metric_label(metric)}")
    return fig
