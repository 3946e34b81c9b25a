"""Compute plots: error against compute with the fitted scaling laws."""

from __future__ import annotations

import logging
import math
from typing import Mapping

import numpy as np
import pandas as pd
from matplotlib.lines import Line2D

from clipscale import fit as fitting
from clipscale.figures.panels import _layout, _panels, _select
from clipscale.figures.specs import FigureSpec
from clipscale.figures.style import (LABEL_FONTSIZE, SOURCE_COLORS, SOURCE_LABELS, SOURCE_LINESTYLES, TITLE_FONTSIZE,
                                     _grid, _log_error_axis, _scatter_runs, _side_legend_of_runs, _style_maps, _title,
                                     dataset_label, error_label, metric_label)

log = logging.getLogger("clipscale.figures")


# ---------------------------------------------------------------------------------------------
# the kinds


def fit_laws(tables: Mapping[str, pd.DataFrame], fit_config: Mapping | None = None,
             seed: int = 0) -> dict[tuple[str, str, str], fitting.Fit]:
    """The paper's laws of result tables (input -> table, group means added), fitted as the fit
    step fits them (``fit.fit_table``): for drawing without the fit step's outputs."""
    st = fitting.FitSettings.of(fit_config)
    laws = {}
    for input_name, table in tables.items():
        fits = fitting.fit_table(table, input_name=input_name, bins=st.bins, bootstrap=st.bootstrap, ci=st.ci,
                                 seed=seed, methods=("paper",), pad=st.bin_pad)
        laws.update(fitting.paper_laws(fits))
    return laws


def draw_compute(spec: FigureSpec, tables: Mapping[str, pd.DataFrame],
                 laws: Mapping[tuple[str, str, str], fitting.Fit], data_sizes: Mapping[str, int] | None = None):
    """Points of the tables and the laws of the fit step ((source, dataset, metric) -> the paper's
    fit, ``fit.laws_from_frames`` or ``fit_laws``): a line per source, its bootstrap band."""
    df = _select(spec, tables)
    panels = _panels(spec, df)
    n_rows, n_cols, where = _layout(spec, panels)
    fig, axes = _grid(n_rows, n_cols)
    colors, markers, sizes = _style_maps(df, data_sizes)
    fits = {}
    for (dataset, metric), (r, c) in where.items():
        ax = axes[r][c]
        sub = df[(df["dataset"] == dataset) & (df["metric"] == metric)]
        _scatter_runs(ax, sub, colors, markers, sizes)
        lo_c, hi_c = sub["total_gmac"].min(), sub["total_gmac"].max()
        xs = np.logspace(math.log10(lo_c) - 0.15, math.log10(hi_c) + 0.15, 200)
        yvals = [100 * sub["error"].to_numpy()]
        fit_handles = []
        for source in spec.sources:
            pts = sub[sub["source"] == source]
            if pts.empty or not spec.fit:
                continue
            f = laws.get((source, dataset, metric))
            if f is None:
                log.warning("figure %s, %s/%s, %s: no fit (the fit step found none: see its log)",
                            spec.name, dataset, metric, source)
                fit_handles.append(Line2D([], [], color=SOURCE_COLORS[source], label=f"{SOURCE_LABELS[source]}: no fit"))
                continue
            fits[(source, dataset, metric)] = f
            y = 100 * f.predict(xs)
            line, = ax.plot(xs, y, color=SOURCE_COLORS[source], linestyle=SOURCE_LINESTYLES[source], lw=2,
                            zorder=2, label=f"{SOURCE_LABELS[source]}: {f.formula(tex=True)}")
            fit_handles.append(line)
            yvals.append(np.clip(y, None, 100.0))
            if spec.band and len(f.draws) >= 2:
                lo, hi = f.interval(xs)
                ax.fill_between(xs, 100 * lo, 100 * hi, color=SOURCE_COLORS[source], alpha=0.12, lw=0, zorder=1)
        ax.set_xscale("log")
        _log_error_axis(ax, np.concatenate(yvals))
        ax.set_xlabel("Total compute C (GMAC)", fontsize=LABEL_FONTSIZE)
        ax.set_ylabel(error_label(metric), fontsize=LABEL_FONTSIZE)
        ours = "ours" in spec.inputs
        ax.set_title(f"{dataset_label(dataset, ours)}, {metric_label(metric)}", fontsize=TITLE_FONTSIZE)
        ax.grid(True, which="major", alpha=0.3)
        if fit_handles:
            ax.legend(handles=fit_handles, loc="lower left", fontsize=8.5, framealpha=0.85)
    for r in range(n_rows):
        for c in range(n_cols):
            if (r, c) not in where.values():
                axes[r][c].set_visible(False)
    _side_legend_of_runs(fig, df, colors, markers, sizes)
    _title(fig, spec.title)
    fig.fits = fits
    return fig
