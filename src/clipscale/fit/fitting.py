"""Fitting a results table: cells and seeds, the bootstrap, a fit per (source, dataset, metric, method)."""

from __future__ import annotations

import logging
import math
from typing import Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

from clipscale.fit.intervals import _seed, t_draws, t_line
from clipscale.fit.law import Fit, diagnose_saturating
from clipscale.fit.methods import fit_arrays
from clipscale.fit.settings import (CELL_COLUMNS, DEFAULT_BIN_PAD, DIRECT_SOURCES, FitError, MIN_BOOTSTRAP_COMPUTES,
                                    SATURATING_DEFAULTS, T_METHODS)

log = logging.getLogger("clipscale.fit")


def paper_method(source: str, n_distinct: int, bins: int, direct_sources: Sequence[str] = DIRECT_SOURCES) -> str:
    """The paper's method for a source: direct for OpenAI (or too few points to bin), else binned."""
    return "direct" if source in direct_sources or n_distinct <= bins else "binned"


def cells_of(points: pd.DataFrame) -> tuple[pd.DataFrame, list[np.ndarray] | None]:
    """Rows that differ only in ``seed`` (grid.seeds) as cells: one row per cell (its lowest
    seed's, with the mean error of its seeds, ``n_seeds``) and the errors of each cell's seeds,
    in the cells' order; (points, None) when every cell has one row (no seed column, one seed)."""
    if "seed" not in points or points["seed"].isna().all():
        return points, None
    keys = [c for c in CELL_COLUMNS if c in points]
    grouped = points.groupby(keys, sort=False, dropna=False)
    if grouped.ngroups == len(points):
        return points, None
    rows, members = [], []
    for _, g in grouped:
        g = g.sort_values("seed", kind="mergesort", na_position="first")
        row = g.iloc[0].copy()
        errors = g["error"].to_numpy(float)
        row["error"] = float(errors.mean())
        if "value" in row:
            row["value"] = 100.0 * (1.0 - row["error"])
        row["n_seeds"] = len(g)
        rows.append(row)
        members.append(errors)
    cells = pd.DataFrame(rows).reset_index(drop=True)
    return cells, members


def fit_points(points: pd.DataFrame, method: str, key: Mapping, bins: int = 5, bootstrap: int = 1000,
               ci: float = 0.95, seed: int = 0, pad: float = DEFAULT_BIN_PAD,
               saturating_options: Mapping | None = None,
               min_bootstrap_computes: int = MIN_BOOTSTRAP_COMPUTES) -> Fit:
    """Fit final runs (rows of a results table) with a method and its intervals; a saturating fit
    is diagnosed (``saturating_options``: config fit.saturating) and its reasons logged. Rows
    that differ only in ``seed`` are one cell (``cells_of``); a power law through fewer than
    ``min_bootstrap_computes`` distinct computes gets a t-interval (module docstring)."""
    opts = {**SATURATING_DEFAULTS, **(saturating_options or {})}
    # a canonical order, so that the bootstrap draws do not depend on the table's row order
    order = [c for c in ("total_gmac", "error", "model", "data", "checkpoint") if c in points]
    n_runs = len(points)
    points, members = cells_of(points.sort_values(order, kind="mergesort").reset_index(drop=True))
    if members is not None:  # cells: the canonical order of their mean errors
        perm = points.sort_values(order, kind="mergesort").index.to_numpy()
        points = points.loc[perm].reset_index(drop=True)
        members = [members[i] for i in perm]
    C = points["total_gmac"].to_numpy(float)
    E = points["error"].to_numpy(float)
    params, sel = fit_arrays(C, E, method, bins=bins, pad=pad, huber_delta=opts["huber_delta"])
    fit = Fit(dict(key), method, params, sel, points, bins, ci, bootstrap, n_runs=n_runs)
    if members is not None:
        fit.seeds = max(len(m) for m in members)
        logs = [np.log10(m) for m in members if len(m) > 1]
        dof = sum(len(m) - 1 for m in logs)
        fit.seed_var = float(sum(np.sum((m - m.mean()) ** 2) for m in logs) / dof) if dof else 0.0
        fit.seed_k = float(np.mean([len(members[i]) for i in sel.index]))
    rng = _seed(seed, key)
    n = len(C)
    if method in T_METHODS and len(np.unique(C)) < min_bootstrap_computes:
        fit.interval_method = "t"
        fit.line = t_line(sel)
        fit.draws = t_draws(fit.line, bootstrap, rng)
    else:
        for _ in range(bootstrap):
            idx = rng.integers(0, n, n)
            E_b = E[idx] if members is None else np.array(
                [members[i][rng.integers(0, len(members[i]), len(members[i]))].mean() for i in idx])
            try:
                p, _ = fit_arrays(C[idx], E_b, method, bins=bins, pad=pad,
                                  start=params if method == "saturating" else None, huber_delta=opts["huber_delta"])
            except FitError:
                continue
            fit.draws.append(p)
    fit.residuals = _run_residuals(fit, members)
    if method == "saturating":
        fit.diagnosis = diagnose_saturating(fit, opts["max_span_decades"], opts["min_aic_gain"])
        if fit.diagnosis:
            log.info("saturating fit of %s not identifiable (%s): %s; no formula, prediction or curve",
                     "/".join(str(key.get(k)) for k in ("input", "source", "dataset", "metric")),
                     fit.formula(), fit.note)
    return fit


def _run_residuals(fit: Fit, members: list[np.ndarray] | None) -> np.ndarray:
    """log10 E of single runs around the law at the points it goes through (each seed of a
    cell its own), scaled by sqrt(n / (n - k)) for the law's k parameters: one run's scatter."""
    sel = fit.selection
    law = np.log10(np.clip(fit.predict(10.0 ** sel.log_c), 1e-300, None))
    if members is None:
        res = sel.log_e - law
    else:
        res = np.concatenate([np.log10(members[i]) - y for i, y in zip(sel.index, law)])
    k = 4 if fit.method == "saturating" else 2
    n = len(sel.log_c)
    return res * math.sqrt(n / (n - k)) if n > k else res


def final_points(df: pd.DataFrame) -> pd.DataFrame:
    """Final checkpoints with a usable error (0 < E <= 1) and compute."""
    ok = df["final"].astype(bool) & (df["error"] > 0) & (df["error"] <= 1) & (df["total_gmac"] > 0)
    return df[ok]


def fit_table(df: pd.DataFrame, input_name: str = "published", bins: int = 5, bootstrap: int = 1000,
              ci: float = 0.95, seed: int = 0, methods: Iterable[str] = ("paper", "pareto", "saturating"),
              direct_sources: Sequence[str] = DIRECT_SOURCES, pad: float = DEFAULT_BIN_PAD,
              where: Mapping[str, Iterable[str]] | None = None,
              saturating_options: Mapping | None = None,
              min_bootstrap_computes: int = MIN_BOOTSTRAP_COMPUTES) -> list[Fit]:
    """Fit every (source, task, dataset, metric) of a results table with each method.

    ``methods`` may hold "paper" (binned or direct, see ``paper_method``), "binned", "direct",
    "pareto", "saturating". ``where`` restricts columns to values (e.g. {"dataset": [...]}).
    Groups that a method cannot fit are logged and skipped.
    """
    df = final_points(df)
    for col, values in (where or {}).items():
        df = df[df[col].isin(list(values))]
    fits = []
    for (source, task, dataset, metric), points in df.groupby(["source", "task", "dataset", "metric"], sort=True):
        key = {"input": input_name, "source": source, "task": task, "dataset": dataset, "metric": metric}
        n_distinct = points["total_gmac"].nunique()  # (a cell's seeds share their compute)
        for m in methods:
            method = paper_method(source, n_distinct, bins, direct_sources) if m == "paper" else m
            if source in direct_sources and method in ("pareto", "saturating"):
                continue
            try:
                fits.append(fit_points(points, method, key, bins=bins, bootstrap=bootstrap, ci=ci, seed=seed,
                                       pad=pad, saturating_options=saturating_options,
                                       min_bootstrap_computes=min_bootstrap_computes))
            except FitError as e:
                log.info("no %s fit for %s/%s/%s (%d runs): %s", method, source, dataset, metric, len(points), e)
    return fits


def find_fit(fits: Iterable[Fit], source: str, dataset: str, metric: str, method: str | None = None) -> Fit | None:
    """The fit of a source/dataset/metric; method None means the paper's (binned or direct)."""
    for f in fits:
        if (f.key["source"], f.key["dataset"], f.key["metric"]) != (source, dataset, metric):
            continue
        if (method is None and f.method in ("binned", "direct")) or f.method == method:
            return f
    return None
