"""The analyses' figures: extrapolation and comparison (in the figures' style)."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

from clipscale import fit as fitting
from clipscale.analysis.common import GROUP
from clipscale.analysis.comparison import Side, default_comparisons


# ---------------------------------------------------------------------------------------------
# figures


#: the paper's main tasks (Tables 16, 19-24: zero-shot classification on ImageNet, its robustness
#: sets and VTAB+, zero-shot retrieval on MS-COCO and Flickr30k): the published extrapolation figure
PUBLISHED_MAIN = ("imagenet1k/acc1", "imagenet_robustness/acc1", "vtab+/acc1",
                  "mscoco_captions/image_retrieval_recall@5", "mscoco_captions/text_retrieval_recall@5",
                  "flickr30k/image_retrieval_recall@5", "flickr30k/text_retrieval_recall@5")
MAIN_TASKS = ("zeroshot_classification", "zeroshot_retrieval")


def main_panels(groups: Iterable[tuple], input_name: str, settings: Mapping) -> list[tuple]:
    """The (source, task, dataset, metric) groups the extrapolation figure draws (the rest only in
    its table): fit.extrapolation.figure_datasets ("dataset" or "dataset/metric") when given; else
    the paper's main tasks for the published input (``PUBLISHED_MAIN``) and, for ours, zero-shot
    classification (top-1) and retrieval on each set that is not averaged into a group's mean (the
    mean is drawn instead)."""
    from clipscale.table import groups_of

    groups = list(groups)
    wanted = ((settings.get("fit") or {}).get("extrapolation") or {}).get("figure_datasets")
    if wanted:
        return [g for g in groups if g[2] in wanted or f"{g[2]}/{g[3]}" in wanted]
    if input_name == "published":
        return [g for g in groups if f"{g[2]}/{g[3]}" in PUBLISHED_MAIN]
    averaged = {m for members in groups_of(settings).values() if len(set(members)) > 1 for m in members}
    return [g for g in groups if g[1] in MAIN_TASKS and g[2] not in averaged
            and (g[1] != "zeroshot_classification" or g[3] == "acc1")]


def draw_extrapolation(table: pd.DataFrame, result: Mapping, title: str | None = None,
                       panels: Sequence[tuple] | None = None):
    """One panel per checked task of ``panels`` ((source, task, dataset, metric); None: all): the
    runs below the cut (grey), held out (black: on the frontier, hollow: not), each identifiable
    law fitted below the cut with its band. One legend below the panels; titles wrapped to the
    panel's width, the figure's title above them."""
    import textwrap

    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    from clipscale.figures.style import (
        LABEL_FONTSIZE,
        TITLE_FONTSIZE,
        _log_error_axis,
        dataset_label,
        error_label,
        metric_label,
    )

    fits = result["fits"]
    groups = sorted({k[:4] for k in fits})
    if panels is not None:
        groups = [g for g in groups if tuple(g) in {tuple(p) for p in panels}]
    if not groups:
        fig, ax = plt.subplots(figsize=(6, 2))
        ax.axis("off")
        ax.text(0.5, 0.5, "no extrapolation check: no source with runs on both sides of the cut",
                ha="center", va="center")
        return fig
    n_cols = min(len(groups), 4)
    n_rows = math.ceil(len(groups) / n_cols)
    fig, axes = plt.subplots(n_rows, n_cols, figsize=(4.6 * n_cols, 3.9 * n_rows + 1.2), squeeze=False)
    colors = plt.get_cmap("tab10")
    df = fitting.final_points(table)
    methods = sorted({k[4] for k, v in fits.items() if k[:4] in set(groups) and v[0] is not None})
    several_sources = len({g[0] for g in groups}) > 1
    for i, (source, task, dataset, metric) in enumerate(groups):
        ax = axes[i // n_cols][i % n_cols]
        pts = df[(df["source"] == source) & (df["task"] == task) & (df["dataset"] == dataset) & (df["metric"] == metric)]
        C, E = pts["total_gmac"].to_numpy(float), pts["error"].to_numpy(float)
        cut = next(v[1] for k, v in fits.items() if k[:4] == (source, task, dataset, metric))
        front = fitting.pareto_mask(C, E)
        below = C < cut
        ax.scatter(C[below], 100 * E[below], color="0.6", s=18, zorder=3)
        ax.scatter(C[~below & front], 100 * E[~below & front], color="black", s=26, zorder=4)
        ax.scatter(C[~below & ~front], 100 * E[~below & ~front], facecolors="none", edgecolors="black", s=22,
                   zorder=4)
        xs = np.logspace(math.log10(C.min()), math.log10(C.max()) + 0.05, 150)
        shown = [100 * E]
        for j, m in enumerate(methods):
            f = fits.get((source, task, dataset, metric, m), (None, cut))[0]
            if f is None:
                continue
            ax.plot(xs, 100 * f.predict(xs), color=colors(j), lw=1.6)
            shown.append(np.clip(100 * f.predict(xs), None, 100.0))
            if len(f.draws) >= 2:
                lo, hi = f.interval(xs)
                ax.fill_between(xs, 100 * lo, 100 * hi, color=colors(j), alpha=0.12, lw=0)
        ax.axvline(cut, color="0.3", ls=":", lw=1)
        ax.set_xscale("log")
        _log_error_axis(ax, np.concatenate(shown))
        ax.set_xlabel("Total compute C (GMAC)", fontsize=LABEL_FONTSIZE - 1)
        ax.set_ylabel(error_label(metric), fontsize=LABEL_FONTSIZE - 1)
        name = f"{dataset_label(dataset, source != 'published' and source != 'openai')}, {metric_label(metric)}"
        ax.set_title(textwrap.fill((f"{source}: " if several_sources else "") + name, 40),
                     fontsize=TITLE_FONTSIZE - 2)
        ax.grid(True, which="major", alpha=0.3)
    for j in range(len(groups), n_rows * n_cols):
        axes[j // n_cols][j % n_cols].set_visible(False)
    handles = [Line2D([], [], color="0.6", marker="o", ls="", label="fitted on (below the cut)"),
               Line2D([], [], color="black", marker="o", ls="", label="held out, on the Pareto frontier"),
               Line2D([], [], color="black", marker="o", mfc="none", ls="", label="held out"),
               Line2D([], [], color="0.3", ls=":", label="cut")]
    handles += [Line2D([], [], color=colors(j), lw=1.6, label=m) for j, m in enumerate(methods)]
    fig.legend(handles=handles, loc="lower center", ncol=min(len(handles), 4), fontsize=8, frameon=False)
    legend_h = 0.45 * math.ceil(len(handles) / 4) / fig.get_size_inches()[1]
    top = 1.0
    if title:
        fig.suptitle(title, fontsize=TITLE_FONTSIZE + 1)
        top = 1.0 - 0.5 / fig.get_size_inches()[1]
    fig.tight_layout(rect=(0, legend_h, 1, top))
    return fig


def data_ranges(table: pd.DataFrame, input_name: str, comparisons: Iterable[Mapping] | None = None
                ) -> dict[str, tuple[float, float]]:
    """Per comparison (fit.comparisons entries of this input, None: the built-in pairs), the
    smallest and largest compute of the final runs of its two sides (the data the laws rest on)."""
    if comparisons is None:
        comparisons = default_comparisons(table, input_name)
    df = fitting.final_points(table)
    out = {}
    for spec in comparisons:
        if spec.get("input", input_name) != input_name:
            continue
        sides = pd.concat([Side.of(spec["a"]).select(df), Side.of(spec["b"]).select(df)])
        if spec.get("datasets"):
            sides = sides[sides["dataset"].isin(spec["datasets"])]
        if spec.get("metrics"):
            sides = sides[sides["metric"].isin(spec["metrics"])]
        if not sides.empty:
            out[spec["name"]] = (float(sides["total_gmac"].min()), float(sides["total_gmac"].max()))
    return out


def gap_rows(comp: pd.DataFrame, ranges: Mapping[str, tuple[float, float]] | None = None,
             within: float | None = 10.0) -> pd.DataFrame:
    """The gap the forest plot shows per comparison and task: at the largest target compute within
    ``within`` x the data's compute range (``ranges``: ``data_ranges``), or at the largest target
    compute when ``within`` is None; a comparison with no target compute in range keeps its row
    with no gap (delta_error nan)."""
    rows = []
    for _, g in comp.groupby(["comparison"] + GROUP[1:], sort=False):
        g = g.sort_values("compute_gmac")
        name = g["comparison"].iloc[0]
        if within is not None and ranges and name in ranges:
            lo, hi = ranges[name]
            inside = g[(g["compute_gmac"] >= lo / within) & (g["compute_gmac"] <= hi * within)]
            if inside.empty:
                row = g.iloc[-1].copy()
                for col in ("delta_error", "delta_error_lo", "delta_error_hi", "compute_gmac"):
                    row[col] = math.nan
                rows.append(row)
                continue
            g = inside
        rows.append(g.iloc[-1])
    return pd.DataFrame(rows).reset_index(drop=True)


def draw_comparison(comp: pd.DataFrame, title: str | None = None,
                    ranges: Mapping[str, tuple[float, float]] | None = None, within: float | None = 10.0):
    """Forest plot: per comparison and task, the difference of exponents and the difference of
    predicted errors with their intervals, the gap at the largest target compute within ``within``
    x the data's compute range (``ranges``; None: the largest target compute), that compute stated
    beside each gap on the right-hand axis."""
    import matplotlib.pyplot as plt

    from clipscale.figures import TITLE_FONTSIZE, dataset_label, metric_label

    if comp.empty:
        fig, ax = plt.subplots(figsize=(6, 2))
        ax.axis("off")
        ax.text(0.5, 0.5, "no comparison: no configured pair has runs on both sides", ha="center", va="center")
        return fig
    last = gap_rows(comp, ranges, within)
    last = last.iloc[::-1].reset_index(drop=True)
    labels = [f"{r.comparison}: {dataset_label(r.dataset, r.input == 'ours')}, {metric_label(r.metric)}"
              for r in last.itertuples()]
    at = []
    for r in last.itertuples():
        text = f"at {r.compute_gmac:.2g} GMAC" if np.isfinite(r.compute_gmac) else "no target compute"
        if ranges and r.comparison in ranges:
            hi = ranges[r.comparison][1]
            text += (f" ({r.compute_gmac / hi:.3g}× the largest run)" if np.isfinite(r.compute_gmac)
                     else f" within {within:g}× of the runs")
        at.append(text)
    y = np.arange(len(last))
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(13.5, 0.42 * len(last) + 2.0))
    scope = (f"the largest target compute within {within:g}× of the runs' compute" if within is not None and ranges
             else "the largest target compute")
    for ax, col, scale, ref, xlabel in (
            (ax1, "alpha_diff", 1.0, 0.0, "α a − α b  (< 0: a's error falls faster)"),
            (ax2, "delta_error", 100.0, 0.0, f"ΔE = E_a − E_b (points; < 0: a better)\nat {scope}")):
        v = scale * last[col].to_numpy(float)
        lo, hi = scale * last[f"{col}_lo"].to_numpy(float), scale * last[f"{col}_hi"].to_numpy(float)
        decided = (lo > ref) | (hi < ref)
        for k in range(len(last)):
            color = "#0072B2" if decided[k] else "0.55"
            if np.isfinite(lo[k]):
                ax.plot([lo[k], hi[k]], [y[k], y[k]], color=color, lw=2)
            if np.isfinite(v[k]):
                ax.plot(v[k], y[k], "o", color=color, ms=6)
        ax.axvline(ref, color="0.3", ls="--", lw=1)
        ax.set_xlabel(xlabel, fontsize=9)
        ax.grid(True, axis="x", alpha=0.3)
        ax.set_ylim(-0.6, len(last) - 0.4)
        ax.set_yticks(y)
    ax1.set_yticklabels(labels, fontsize=8)
    ax2.yaxis.tick_right()
    ax2.set_yticklabels(at, fontsize=8)
    names = "; ".join(f"{n}: a = {g['a'].iloc[0]}, b = {g['b'].iloc[0]}" for n, g in comp.groupby("comparison", sort=False))
    fig.suptitle(title or "Comparison of scaling laws", fontsize=TITLE_FONTSIZE)
    fig.text(0.5, 0.005, names + " (blue: interval excludes the reference)", ha="center", fontsize=8)
    height = fig.get_size_inches()[1]
    fig.tight_layout(rect=(0, 0.35 / height, 1, 1 - 0.45 / height))
    return fig
