"""The compute-optimal allocation from a fitted law: the optimal size per budget, the optima with their
intervals, our runs against them, optima at a bound."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from clipscale.compute_optimal.law import (A_BOUNDS, GRID, JointFit, JointLaw, R_STAR_BOUNDS, SEARCH_DECADES,
                                           UNLIMITED, _arrays)


# ---------------------------------------------------------------------------------------------
# the optimum at a budget


def optimal_size(law: JointLaw, budgets, U: float, g_range: tuple[float, float]):
    """G_opt, E_opt and whether the optimum is at the search's edge, for each budget (GMAC) at data
    scale U (inf: unlimited), G searched over ``g_range`` (GMAC per sample)."""
    C = np.atleast_1d(np.asarray(budgets, float))
    lg = np.linspace(math.log(g_range[0]), math.log(g_range[1]), GRID)
    Gs = np.exp(lg)[None, :]
    E = law.predict(Gs, C[:, None] / Gs, U)
    k = np.argmin(E, axis=1)
    edge = (k == 0) | (k == GRID - 1)
    kk = np.clip(k, 1, GRID - 2)
    rows = np.arange(len(C))
    y0, y1, y2 = E[rows, kk - 1], E[rows, kk], E[rows, kk + 1]
    den = y0 - 2 * y1 + y2
    shift = np.where(den > 0, 0.5 * (y0 - y2) / np.where(den > 0, den, 1), 0.0)
    step = lg[1] - lg[0]
    best = np.where(edge, lg[k], lg[kk] + np.clip(shift, -1, 1) * step)
    G_opt = np.exp(best)
    return G_opt, law.predict(G_opt, C / G_opt, U), edge


def default_budgets(C: np.ndarray) -> list[float]:
    """The powers of ten from the smallest run's compute to ten times the largest (the law says
    nothing below its runs, and little far beyond them)."""
    lo, hi = math.ceil(math.log10(C.min()) - 1e-9), math.floor(math.log10(10 * C.max()) + 1e-9)
    return [10.0 ** k for k in range(lo, hi + 1)]


def _scales(points: pd.DataFrame) -> list[tuple[str, float]]:
    sizes = points.groupby("data")["data_size"].first() if "data_size" in points else pd.Series(dtype=float)
    out = [(str(d), float(s)) for d, s in sizes.items() if np.isfinite(s) and s > 0]
    return sorted(out, key=lambda t: t[1]) + [(UNLIMITED, math.inf)]


def _nearest(models: Mapping[str, float], g: float) -> tuple[str, float]:
    name = min(models, key=lambda m: abs(math.log(models[m] / g)))
    return name, models[name]


def optima(fit: JointFit, input_name: str, budgets: Sequence[float]) -> list[dict]:
    pts = fit.points
    G, D, U, E = _arrays(pts)
    g_range = (G.min() / 10 ** SEARCH_DECADES, G.max() * 10 ** SEARCH_DECADES)
    models = dict(zip(pts["model"], pts["gmac_per_sample"].astype(float)))
    rows = []
    for data, size in _scales(pts):
        g, e, edge = optimal_size(fit.law, budgets, size, g_range)
        draws = [optimal_size(d, budgets, size, g_range)[:2] for d in fit.draws]
        for j, C in enumerate(budgets):
            gd = np.array([d[0][j] for d in draws])
            ed = np.array([d[1][j] for d in draws])
            glo, ghi = fit.interval(gd)
            elo, ehi = fit.interval(ed)
            name, near = _nearest(models, g[j])
            s = C / g[j]
            rows.append({**fit.key, "input": input_name, "data": data, "data_size": size, "budget_gmac": float(C),
                         "gmac_per_sample": float(g[j]), "gmac_per_sample_lo": glo, "gmac_per_sample_hi": ghi,
                         "samples_seen": float(s), "samples_seen_lo": C / ghi if ghi == ghi else math.nan,
                         "samples_seen_hi": C / glo if glo == glo else math.nan,
                         "epochs": float(s / size) if np.isfinite(size) else math.nan,
                         "error": float(e[j]), "error_lo": elo, "error_hi": ehi,
                         "nearest_model": name, "nearest_gmac": near,
                         "extrapolated": bool(not (G.min() <= g[j] <= G.max()) or not (D.min() <= s <= D.max())),
                         "at_edge": bool(edge[j]), "ci": fit.ci})
    return rows


def compare_runs(fit: JointFit, input_name: str) -> list[dict]:
    """Each run against the optimum at its own compute and data scale."""
    pts = fit.points
    G, D, U, E = _arrays(pts)
    C = G * D
    u = np.where(np.isfinite(U), U, math.inf)
    g_range = (G.min() / 10 ** SEARCH_DECADES, G.max() * 10 ** SEARCH_DECADES)
    g_opt, e_opt = np.empty(len(G)), np.empty(len(G))
    lo, hi = np.full(len(G), math.nan), np.full(len(G), math.nan)
    for size in np.unique(u):
        at = np.flatnonzero(u == size)
        g_opt[at], e_opt[at], _ = optimal_size(fit.law, C[at], size, g_range)
        draws = np.array([optimal_size(d, C[at], size, g_range)[0] for d in fit.draws]).reshape(len(fit.draws), len(at))
        for j, i in enumerate(at):
            lo[i], hi[i] = fit.interval(draws[:, j])
    law_e = fit.law.predict(G, D, u)
    rows = []
    for i, (_, run) in enumerate(pts.iterrows()):
        rows.append({**fit.key, "input": input_name, "model": run["model"], "data": run["data"],
                     "samples_seen_label": run.get("samples_seen_label", ""), "samples_seen": float(D[i]),
                     "gmac_per_sample": float(G[i]), "total_gmac": float(C[i]), "data_size": float(U[i]),
                     "error": float(E[i]), "law_error": float(law_e[i]), "optimal_gmac": float(g_opt[i]),
                     "optimal_gmac_lo": lo[i], "optimal_gmac_hi": hi[i], "size_ratio": float(G[i] / g_opt[i]),
                     "inside": bool(lo[i] <= G[i] <= hi[i]) if np.isfinite(lo[i]) else None,
                     "optimal_error": float(e_opt[i]), "excess_pts": 100 * float(law_e[i] - e_opt[i])})
    return rows


def at_bounds(fit: JointFit) -> list[str]:
    """The law's exponents (and R* when fitted) at a bound of the fit: the runs do not pin them
    (a law of a regime the runs are not in, e.g. errors near chance), so neither its optimum."""
    p, out = fit.law.params, []
    for name in ("a", "b"):
        for bound in A_BOUNDS:
            if math.isclose(p[name], bound, rel_tol=1e-3):
                out.append(f"{name} at its bound {bound:g}")
    if fit.r_star_fixed is None:
        for bound in R_STAR_BOUNDS:
            if math.isclose(p["r_star"], bound, rel_tol=1e-3):
                out.append(f"R* at its bound {bound:g}")
    return out
