"""Shared by the plot families: a figure's rows (``_select``), its panels and their layout, dash patterns."""

from __future__ import annotations

import math
from typing import Mapping

import pandas as pd

from clipscale import fit as fitting
from clipscale.figures.specs import FigureError, FigureSpec


def _panels(spec: FigureSpec, df: pd.DataFrame) -> list[tuple[str, str]]:
    panels = [(d, m) for d in spec.datasets for m in spec.metrics
              if ((df["dataset"] == d) & (df["metric"] == m)).any()]
    if not panels:
        have = sorted(set(zip(df["dataset"], df["metric"])))[:20]
        raise FigureError(
            f"figure {spec.name!r}: no final results for datasets {spec.datasets} x metrics {spec.metrics} "
            f"from sources {spec.sources} (the tables have {have})"
        )
    return panels


def _layout(spec: FigureSpec, panels: list[tuple[str, str]]) -> tuple[int, int, dict]:
    datasets = list(dict.fromkeys(d for d, _ in panels))
    metrics = list(dict.fromkeys(m for _, m in panels))
    if len(datasets) > 1 and len(metrics) > 1:
        return len(datasets), len(metrics), {p: (datasets.index(p[0]), metrics.index(p[1])) for p in panels}
    n_cols = min(len(panels), 3)
    n_rows = math.ceil(len(panels) / n_cols)
    return n_rows, n_cols, {p: divmod(i, n_cols) for i, p in enumerate(panels)}


def _select(spec: FigureSpec, tables: Mapping[str, pd.DataFrame]) -> pd.DataFrame:
    parts = []
    for inp in spec.inputs:
        if inp not in tables:
            raise FigureError(f"figure {spec.name!r} needs the {inp!r} results table")
        parts.append(tables[inp])
    df = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()
    df = fitting.final_points(df)
    df = df[df["source"].isin(spec.sources) & df["dataset"].isin(spec.datasets) & df["metric"].isin(spec.metrics)]
    if spec.models:
        df = df[df["model"].isin(spec.models)]
    return df


def _dashes(style) -> tuple | str:
    """A matplotlib line style as seaborn's dashes: "" for solid, else (on, off, ...)."""
    if isinstance(style, tuple):
        return tuple(style[1])
    return {"-": "", "--": (4, 2), "-.": (4, 1.5, 1, 1.5), ":": (1, 1.5)}[style]
