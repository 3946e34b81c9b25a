"""Dedup figures: the overlap of the downstream sets with the training data."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from clipscale.figures.specs import FigureError, FigureSpec
from clipscale.figures.style import LABEL_FONTSIZE, SOURCE_COLORS, TITLE_FONTSIZE


def draw_overlap(spec: FigureSpec, overlap: pd.DataFrame):
    missing = [c for c in ("dataset", "overlap_pct") if c not in overlap.columns]
    if missing:
        raise FigureError(f"figure {spec.name!r}: the overlap table lacks columns {missing}")
    ov = overlap.copy()
    ov["overlap_pct"] = pd.to_numeric(ov["overlap_pct"], errors="coerce")
    if ov["overlap_pct"].isna().any():
        raise FigureError(f"figure {spec.name!r}: non-numeric overlap_pct for {ov.loc[ov['overlap_pct'].isna(), 'dataset'].tolist()}")
    if ov.empty:
        raise FigureError(f"figure {spec.name!r}: the overlap table is empty")
    modes = [c[len("overlap_pct_"):] for c in ov.columns
             if c.startswith("overlap_pct_") and c != "overlap_pct_exact"]
    if modes:  # the dedup modes (dedup.modes) beside the paper's pHash
        return _draw_overlap_modes(spec, ov, modes)
    ov = ov.sort_values("overlap_pct")
    fig, ax = plt.subplots(figsize=(7.5, 0.45 * len(ov) + 1.6))
    bars = ax.barh(ov["dataset"].astype(str), ov["overlap_pct"], color=SOURCE_COLORS[spec.sources[0]], alpha=0.85)
    top = float(ov["overlap_pct"].max()) or 1.0
    for bar, v in zip(bars, ov["overlap_pct"]):
        ax.text(bar.get_width() + 0.01 * top, bar.get_y() + bar.get_height() / 2, f"{v:.2f}%", va="center",
                fontsize=9)
    ax.set_xlim(0, top * 1.15)
    ax.set_xlabel("Test images with a near-duplicate in the training pool (%)", fontsize=LABEL_FONTSIZE)
    ax.set_title(spec.title or "Near-duplicate overlap", fontsize=TITLE_FONTSIZE)
    ax.grid(True, axis="x", alpha=0.3)
    fig.tight_layout()
    return fig


def _draw_overlap_modes(spec: FigureSpec, ov: pd.DataFrame, modes: list[str]):
    """One bar per matching mode and test set, the paper's pHash first, all modes together
    ("any") last: how much overlap pHash alone leaves behind."""
    columns = ["overlap_pct"] + [f"overlap_pct_{m}" for m in modes]
    labels = ["pHash (paper)"] + [m if m != "any" else "any mode" for m in modes]
    for c in columns:
        ov[c] = pd.to_numeric(ov[c], errors="coerce").fillna(0.0)
    ov = ov.sort_values(columns[-1])
    n, k = len(ov), len(columns)
    height = 0.8 / k
    fig, ax = plt.subplots(figsize=(7.5, (0.3 + 0.22 * k) * n + 1.8))
    colors = plt.get_cmap("tab10").colors
    top = float(ov[columns].to_numpy().max()) or 1.0
    for j, (c, label) in enumerate(zip(columns, labels)):
        y = np.arange(n) - 0.4 + height * (k - 1 - j + 0.5)
        color = SOURCE_COLORS[spec.sources[0]] if j == 0 else ("0.35" if label == "any mode" else colors[j % 10])
        bars = ax.barh(y, ov[c], height=height * 0.95, color=color, alpha=0.85, label=label)
        for bar, v in zip(bars, ov[c]):
            ax.text(bar.get_width() + 0.01 * top, bar.get_y() + bar.get_height() / 2, f"{v:.1f}%",
                    va="center", fontsize=6.5)
    ax.set_yticks(np.arange(n), ov["dataset"].astype(str))
    ax.set_xlim(0, top * 1.18)
    ax.set_xlabel("Test images with a near-duplicate in the training pool (%)", fontsize=LABEL_FONTSIZE)
    ax.set_title(spec.title or "Near-duplicate overlap", fontsize=TITLE_FONTSIZE)
    ax.legend(fontsize=8, loc="lower right", title="matching mode", title_fontsize=8)
    ax.grid(True, axis="x", alpha=0.3)
    fig.tight_layout()
    return fig
