"""Compute-optimal allocation: which model size and how many samples seen for a compute budget.

The paper's laws (``clipscale.fit``) are laws of error in total compute C alone, and the best run
of each compute bin (``clipscale.analysis.bin_winners``) only says which of the runs made was
best. This module fits a joint law of error in model size and samples seen, with a term for
repeated data, and minimises it at a fixed budget.

The law (one per source, task, dataset and metric)::

    E(G, D, U) = e + A (G / G0)^(-a) + B (D' / D0)^(-b)
    D' = U_D + U_D R* (1 - exp(-R_D / R*)),   U_D = min(D, U),   R_D = D / U_D - 1

* G, the model size, is the model's GMAC per sample (image and text encoder, Table 25), not its
  parameter count: the budget is C = G x D exactly (the paper's compute axis), whereas parameters
  do not fix compute (ViT-B/32 and ViT-B/16 both have ~150M parameters but 7.4 and 20.6 GMAC per
  sample: the patch size changes compute, not parameters), so a law in parameters could neither
  tell these models apart nor hold a budget fixed.
* D is the samples seen, U the unique samples of the training set (its data scale), D' the
  effective data of Muennighoff et al. 2023 ("Scaling data-constrained language models", eq. 5):
  the first epoch counts in full, each further one less, R* being the number of repetitions
  after which repeated data is worth 1 - 1/e of what it would be fresh; R_D is the number of
  repetitions beyond the first epoch (LAION-80M at 34B samples: 428 epochs, R_D = 427). With
  U unknown (or no run that repeats data) D' = D. R* is fitted (``fit.compute_optimal.repeat_decay``:
  null) or fixed (a number; Muennighoff et al. fit R*_D = 15.4 for language models).
* G0, D0 are the geometric means of the runs' G and D (they only set the units of A and B).

The fit is least squares on ln E (the laws' scale: errors of a few points count alike at every
compute), with several starts, bounded (0 <= e < min E, 0.01 <= a, b <= 3, 0.1 <= R* <= 1e4).
Intervals are percentile intervals of a bootstrap over runs: cells (model, data, samples seen)
are resampled with replacement, all the rows of a cell (its seeds) together; each draw is refitted
from the point estimate.

For a budget C and a data scale U (each training set of the source, and unlimited data: D' = D),
the optimal model size minimises E(G, C / G, U) over G (on a grid of log G two decades beyond the
runs' sizes, refined by a parabola); D_opt = C / G_opt. Each bootstrap draw gives its own optimum,
hence intervals of G_opt, D_opt and E_opt. An optimum outside the runs' range of G or D is
flagged (``extrapolated``), as is one at the edge of the search (``at_edge``: no interior optimum).
The runs actually made are compared with the optimum at their own compute and data scale: G /
G_opt (1: the optimal size; inside: within G_opt's interval) and the excess error of the law at
the run over the law at the optimum (points).
"""

from __future__ import annotations

import logging
import math
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy.optimize import least_squares

log = logging.getLogger(__name__)

GROUP = ["source", "task", "dataset", "metric"]
CELL = ["model", "data", "samples_seen"]
PARAMS = ("e", "A", "a", "B", "b", "r_star")
A_BOUNDS = (0.01, 3.0)
R_STAR_BOUNDS = (0.1, 1e4)
MUENNIGHOFF_R_STAR = 15.4  # R*_D of Muennighoff et al. 2023 (language models), for reference
SEARCH_DECADES = 2.0  # the optimum is searched this far beyond the runs' model sizes
GRID = 401
UNLIMITED = "unlimited"

LAW_COLUMNS = [
    "input", "source", "task", "dataset", "metric", "n_runs", "n_cells", "n_models", "n_samples", "n_data",
    "repeats", "r_star_fitted", "G0", "D0", "rmse_ln",
    *[f"{p}{s}" for p in PARAMS for s in ("", "_lo", "_hi")],
    "size_exponent", "size_exponent_lo", "size_exponent_hi", "bootstrap_valid", "ci", "formula", "note",
]
OPTIMUM_COLUMNS = [
    "input", "source", "task", "dataset", "metric", "data", "data_size", "budget_gmac",
    "gmac_per_sample", "gmac_per_sample_lo", "gmac_per_sample_hi",
    "samples_seen", "samples_seen_lo", "samples_seen_hi", "epochs",
    "error", "error_lo", "error_hi", "nearest_model", "nearest_gmac", "extrapolated", "at_edge", "ci",
]
RUN_COLUMNS = [
    "input", "source", "task", "dataset", "metric", "model", "data", "samples_seen_label", "samples_seen",
    "gmac_per_sample", "total_gmac", "data_size", "error", "law_error", "optimal_gmac", "optimal_gmac_lo",
    "optimal_gmac_hi", "size_ratio", "inside", "optimal_error", "excess_pts",
]


class ComputeOptimalError(ValueError):
    """Too few or unsuitable runs for the joint law."""


# ---------------------------------------------------------------------------------------------
# the law


def effective_data(D, U, r_star: float):
    """Muennighoff et al.'s effective data D' of D samples seen from U unique ones (U inf or nan:
    no repetition, D' = D)."""
    D = np.asarray(D, float)
    U = np.broadcast_to(np.asarray(U, float), D.shape)
    U = np.where(np.isfinite(U) & (U > 0), U, np.inf)
    unique = np.minimum(D, U)
    R = np.maximum(D / unique - 1.0, 0.0)
    if not np.isfinite(r_star):
        return D
    return unique * (1.0 + r_star * (-np.expm1(-R / r_star)))


@dataclass
class JointLaw:
    """E = e + A (G/G0)^-a + B (D'/D0)^-b; ``params`` e, A, a, B, b, r_star."""

    params: dict[str, float]
    G0: float
    D0: float

    def predict(self, G, D, U=np.inf):
        p = self.params
        Deff = effective_data(D, U, p["r_star"])
        return p["e"] + p["A"] * (np.asarray(G, float) / self.G0) ** (-p["a"]) + p["B"] * (Deff / self.D0) ** (-p["b"])

    @property
    def size_exponent(self) -> float:
        """With unlimited data, G_opt grows as C^(b / (a + b))."""
        return self.params["b"] / (self.params["a"] + self.params["b"])

    def formula(self) -> str:
        p = self.params
        r = f", R* = {p['r_star']:.3g}" if np.isfinite(p["r_star"]) else ""
        return (f"E = {p['e']:.3f} + {p['A']:.3g}·(G/{self.G0:.3g})^-{p['a']:.3f} + "
                f"{p['B']:.3g}·(D'/{self.D0:.3g})^-{p['b']:.3f}{r}")


def _unpack(x: np.ndarray, r_star_fixed: float | None) -> dict[str, float]:
    out = {"e": x[0], "A": math.exp(x[1]), "a": x[2], "B": math.exp(x[3]), "b": x[4]}
    out["r_star"] = math.exp(x[5]) if r_star_fixed is None else r_star_fixed
    return {k: float(v) for k, v in out.items()}


def _pack(p: Mapping[str, float], fit_r_star: bool) -> np.ndarray:
    x = [p["e"], math.log(p["A"]), p["a"], math.log(p["B"]), p["b"]]
    if fit_r_star:
        x.append(math.log(p["r_star"]))
    return np.array(x, float)


def _fit_once(G, D, U, E, G0, D0, r_star_fixed, starts) -> tuple[dict, float]:
    lnE = np.log(E)
    fit_r = r_star_fixed is None
    e_hi = 0.999 * float(E.min())
    lo = [0.0, -20.0, A_BOUNDS[0], -20.0, A_BOUNDS[0]] + ([math.log(R_STAR_BOUNDS[0])] if fit_r else [])
    hi = [e_hi, 5.0, A_BOUNDS[1], 5.0, A_BOUNDS[1]] + ([math.log(R_STAR_BOUNDS[1])] if fit_r else [])
    g = np.log(G / G0)
    Uf = np.where(np.isfinite(U) & (U > 0), U, np.inf)
    unique = np.minimum(D, Uf)
    R = np.maximum(D / unique - 1.0, 0.0)
    d_fixed = None if fit_r else np.log(effective_data(D, U, r_star_fixed) / D0)

    def terms(x):
        if fit_r:
            r_star = math.exp(x[5])
            decay = np.exp(-R / r_star)
            Deff = unique * (1.0 + r_star * (1.0 - decay))
            # d ln D' / d ln R*: R* dD'/dR* / D'
            dd = unique * r_star * ((1.0 - decay) - (R / r_star) * decay) / Deff
            d_ = np.log(Deff / D0)
        else:
            d_, dd = d_fixed, None
        tA, tB = np.exp(x[1] - x[2] * g), np.exp(x[3] - x[4] * d_)
        return x[0] + tA + tB, tA, tB, d_, dd

    def resid(x):
        return np.log(terms(x)[0]) - lnE

    def jac(x):
        pred, tA, tB, d_, dd = terms(x)
        cols = [np.ones_like(pred), tA, -g * tA, tB, -d_ * tB]
        if fit_r:
            cols.append(-x[4] * tB * dd)
        return np.stack(cols, axis=1) / pred[:, None]

    best, best_cost = None, math.inf
    for s in starts:
        x0 = np.clip(_pack(s, fit_r), np.array(lo) + 1e-9, np.array(hi) - 1e-9)
        try:
            res = least_squares(resid, x0, jac=jac, bounds=(lo, hi), method="trf", x_scale="jac", max_nfev=400)
        except (ValueError, FloatingPointError):
            continue
        if np.isfinite(res.cost) and res.cost < best_cost:
            best, best_cost = res.x, float(res.cost)
    if best is None:
        raise ComputeOptimalError("the joint law did not converge")
    return _unpack(best, r_star_fixed), best_cost


def _starts(E: np.ndarray, r_star_fixed) -> list[dict]:
    m = float(E.min())
    out = []
    for e in (0.0, 0.5 * m, 0.9 * m):
        for a, b in ((0.3, 0.3), (0.1, 0.5), (0.5, 0.1), (1.0, 1.0)):
            for r in ((5.0, 100.0) if r_star_fixed is None else (r_star_fixed,)):
                rest = max(float(np.median(E)) - e, 1e-3)
                out.append({"e": e, "A": rest / 2, "a": a, "B": rest / 2, "b": b, "r_star": r})
    return out


@dataclass
class JointFit:
    key: dict
    law: JointLaw
    points: pd.DataFrame
    ci: float
    r_star_fixed: float | None
    rmse_ln: float
    draws: list[JointLaw] = field(default_factory=list)

    def interval(self, values: np.ndarray) -> tuple[float, float]:
        v = np.asarray(values, float)
        v = v[np.isfinite(v)]
        if len(v) < 2:
            return math.nan, math.nan
        q = (1 - self.ci) / 2
        return float(np.quantile(v, q)), float(np.quantile(v, 1 - q))


def _arrays(points: pd.DataFrame):
    G = points["gmac_per_sample"].to_numpy(float)
    D = points["samples_seen"].to_numpy(float)
    U = points["data_size"].to_numpy(float) if "data_size" in points else np.full(len(G), np.nan)
    E = points["error"].to_numpy(float)
    return G, D, U, E


def check_points(points: pd.DataFrame, min_runs: int) -> None:
    G, D, U, E = _arrays(points)
    problems = []
    if len(np.unique(G)) < 2:
        problems.append(f"{len(np.unique(G))} model size(s)")
    if len(np.unique(D)) < 2:
        problems.append(f"{len(np.unique(D))} samples seen value(s)")
    if len(points) < min_runs:
        problems.append(f"{len(points)} runs (< {min_runs})")
    if problems:
        raise ComputeOptimalError("too few runs for a law in model size and samples seen: " + ", ".join(problems))


def repeats(points: pd.DataFrame) -> bool:
    """Whether any run sees its data more than once (the repetition term is identifiable only then,
    and with more than one data scale or samples seen beyond it)."""
    G, D, U, E = _arrays(points)
    return bool(np.any(np.isfinite(U) & (D > U)))


def fit_joint(points: pd.DataFrame, key: Mapping, bootstrap: int = 200, ci: float = 0.95, seed: int = 0,
              repeat_decay: float | None = None, min_runs: int = 12) -> JointFit:
    """Fit the joint law to final runs (rows with gmac_per_sample, samples_seen, data_size,
    error) and bootstrap it over cells."""
    order = [c for c in ("gmac_per_sample", "samples_seen", "data", "error") if c in points]
    points = points.sort_values(order, kind="mergesort").reset_index(drop=True)
    check_points(points, min_runs)
    G, D, U, E = _arrays(points)
    r_fixed = repeat_decay if repeat_decay is not None else (None if repeats(points) else math.inf)
    G0, D0 = float(np.exp(np.log(G).mean())), float(np.exp(np.log(D).mean()))
    params, cost = _fit_once(G, D, U, E, G0, D0, r_fixed, _starts(E, r_fixed))
    fit = JointFit(dict(key), JointLaw(params, G0, D0), points, ci, r_fixed, math.sqrt(2 * cost / len(E)))
    cells = points.groupby([c for c in CELL if c in points], sort=True).indices
    members = [np.asarray(v) for v in cells.values()]
    text = "|".join(str(key.get(k)) for k in GROUP) + "|compute_optimal"
    rng = np.random.default_rng([int(seed), zlib.crc32(text.encode())])
    start = [params]
    for _ in range(bootstrap):
        pick = rng.integers(0, len(members), len(members))
        idx = np.concatenate([members[i] for i in pick])
        if len(np.unique(G[idx])) < 2 or len(np.unique(D[idx])) < 2:
            continue
        try:
            p, _ = _fit_once(G[idx], D[idx], U[idx], E[idx], G0, D0, r_fixed, start)
        except ComputeOptimalError:
            continue
        fit.draws.append(JointLaw(p, G0, D0))
    return fit


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


def law_row(fit: JointFit, input_name: str) -> dict:
    pts = fit.points
    G, D, U, E = _arrays(pts)
    row = {**fit.key, "input": input_name, "n_runs": len(pts),
           "n_cells": len(pts.drop_duplicates([c for c in CELL if c in pts])),
           "n_models": len(np.unique(G)), "n_samples": len(np.unique(D)), "n_data": pts["data"].nunique(),
           "repeats": repeats(pts), "r_star_fitted": fit.r_star_fixed is None, "G0": fit.law.G0, "D0": fit.law.D0,
           "rmse_ln": fit.rmse_ln, "bootstrap_valid": len(fit.draws), "ci": fit.ci, "formula": fit.law.formula()}
    for p in PARAMS:
        row[p] = fit.law.params[p]
        row[f"{p}_lo"], row[f"{p}_hi"] = fit.interval([d.params[p] for d in fit.draws])
    row["note"] = "; ".join(at_bounds(fit))
    row["size_exponent"] = fit.law.size_exponent
    row["size_exponent_lo"], row["size_exponent_hi"] = fit.interval([d.size_exponent for d in fit.draws])
    return row


# ---------------------------------------------------------------------------------------------
# tables


def analyse(table: pd.DataFrame, input_name: str, settings: Mapping, seed: int = 0,
            data_sizes: Mapping[str, float] | None = None) -> dict[str, pd.DataFrame]:
    """The compute-optimal analysis of a results table: {"laws", "optima", "runs"} frames.
    ``settings``: fit.compute_optimal (bootstrap, repeat_decay, min_runs, budgets_gmac, datasets)
    with fit.ci as "ci"."""
    from clipscale.fit import final_points
    from clipscale.table import data_size

    df = final_points(table).copy()
    known = dict(data_sizes or {})
    if "data_size" not in df:
        df["data_size"] = np.nan
    sizes = df["data_size"].astype(float)
    missing = ~np.isfinite(sizes)
    df["data_size"] = np.where(missing, [data_size(str(d), known) for d in df["data"]], sizes)
    wanted = settings.get("datasets")
    budgets_cfg = (settings.get("budgets_gmac") or {}).get(input_name)
    laws, optimum_rows, run_rows = [], [], []
    for (source, task, dataset, metric), points in df.groupby(GROUP, sort=True):
        if wanted and dataset not in wanted and f"{dataset}/{metric}" not in wanted:
            continue
        key = {"source": source, "task": task, "dataset": dataset, "metric": metric}
        where = f"{input_name}/{source}/{dataset}/{metric}"
        try:
            check_points(points, int(settings.get("min_runs", 12)))
            fit = fit_joint(points, key, int(settings.get("bootstrap", 200)), float(settings.get("ci", 0.95)),
                            seed, settings.get("repeat_decay"), int(settings.get("min_runs", 12)))
        except ComputeOptimalError as e:
            log.info("compute-optimal %s: %s", where, e)
            continue
        budgets = sorted(float(b) for b in budgets_cfg) if budgets_cfg else \
            default_budgets(points["total_gmac"].to_numpy(float))
        laws.append(law_row(fit, input_name))
        optimum_rows += optima(fit, input_name, budgets)
        run_rows += compare_runs(fit, input_name)
        log.info("compute-optimal %s: %s (%d runs, %d/%d draws); G_opt ~ C^%.2f", where, fit.law.formula(),
                 len(points), len(fit.draws), int(settings.get("bootstrap", 200)), fit.law.size_exponent)
    return {"laws": pd.DataFrame(laws, columns=LAW_COLUMNS),
            "optima": pd.DataFrame(optimum_rows, columns=OPTIMUM_COLUMNS),
            "runs": pd.DataFrame(run_rows, columns=RUN_COLUMNS)}


def _ci(v: float, lo: float, hi: float, fmt: str) -> str:
    if not np.isfinite(v):
        return "∞" if v == math.inf else ""
    if not (np.isfinite(lo) and np.isfinite(hi)):
        return format(v, fmt)
    return f"{format(v, fmt)} [{format(lo, fmt)}, {format(hi, fmt)}]"


def markdown(out: Mapping[str, pd.DataFrame]) -> str:
    from clipscale.fit import to_markdown

    laws, opt, runs = out["laws"], out["optima"], out["runs"]
    if laws.empty:
        return ("_no compute-optimal analysis: no source and task with runs of at least two model sizes "
                "and two samples seen (and fit.compute_optimal.min_runs runs)_\n")
    level = f"{laws['ci'].iloc[0]:.0%}"
    parts = [
        "## Compute-optimal allocation\n\n"
        "Joint law E = e + A·(G/G0)^−a + B·(D'/D0)^−b, G the model's GMAC per sample, D the samples seen, "
        "D' = U_D + U_D·R*·(1 − exp(−R_D/R*)) the effective data of U unique samples seen R_D times beyond the "
        f"first epoch (Muennighoff et al. 2023). {level} intervals: bootstrap over runs (cells with their "
        "seeds). With unlimited data G_opt ∝ C^(b/(a+b)).\n\n",
        to_markdown(pd.DataFrame({
            "source": laws["source"], "dataset": laws["dataset"], "metric": laws["metric"],
            "runs": laws["n_runs"], "e": [_ci(*v, ".3f") for v in zip(laws["e"], laws["e_lo"], laws["e_hi"])],
            "a (size)": [_ci(*v, ".3f") for v in zip(laws["a"], laws["a_lo"], laws["a_hi"])],
            "b (data)": [_ci(*v, ".3f") for v in zip(laws["b"], laws["b_lo"], laws["b_hi"])],
            "R*": [_ci(*v, ".3g") if f else "not fitted (no repeated data)" if not r else _ci(*v, ".3g") + " (fixed)"
                   for v, f, r in zip(zip(laws["r_star"], laws["r_star_lo"], laws["r_star_hi"]),
                                      laws["r_star_fitted"], laws["repeats"])],
            "G_opt ∝ C^": [_ci(*v, ".2f") for v in zip(laws["size_exponent"], laws["size_exponent_lo"],
                                                          laws["size_exponent_hi"])],
            "rmse ln E": laws["rmse_ln"], "draws": laws["bootstrap_valid"],
            "note": laws["note"].fillna(""),
        }), floatfmt=".3f"),
    ]
    if not opt.empty:
        parts.append(
            "\n### Optimal model size and samples seen per budget\n\nG_opt in GMAC per sample (nearest model of "
            "the runs), D_opt = C / G_opt, E_opt the law's error at the optimum (%); * outside the runs' range "
            "of G or D (an extrapolation), † at the search's edge (no optimum within two decades of the runs' "
            "sizes).\n\n")
        o = opt
        parts.append(to_markdown(pd.DataFrame({
            "source": o["source"], "dataset": o["dataset"], "metric": o["metric"], "data": o["data"],
            "budget (GMAC)": [f"{v:.0e}" for v in o["budget_gmac"]],
            "G_opt (GMAC/sample)": [_ci(*v, ".3g") + ("*" if x else "") + ("†" if ed else "")
                                    for v, x, ed in zip(zip(o["gmac_per_sample"], o["gmac_per_sample_lo"],
                                                            o["gmac_per_sample_hi"]), o["extrapolated"], o["at_edge"])],
            "nearest model": o["nearest_model"],
            "D_opt (samples)": [_ci(*v, ".3g") for v in
                                zip(o["samples_seen"], o["samples_seen_lo"], o["samples_seen_hi"])],
            "epochs": [f"{v:.3g}" if np.isfinite(v) else "" for v in o["epochs"]],
            "E_opt (%)": [_ci(*(100 * np.array(v)), ".2f") for v in zip(o["error"], o["error_lo"], o["error_hi"])],
        })))
    if not runs.empty:
        g = runs.groupby(["source", "dataset", "metric"], sort=True)
        summary = pd.DataFrame({
            "runs": g.size(),
            "G within G_opt's interval": g["inside"].apply(lambda s: f"{int(s.fillna(False).sum())}/{len(s)}"),
            "too small (G < G_opt)": g["size_ratio"].apply(lambda s: int((s < 1).sum())),
            "median G / G_opt": g["size_ratio"].median(),
            "median excess error (pts)": g["excess_pts"].median(),
            "max excess error (pts)": g["excess_pts"].max(),
        }).reset_index()
        parts.append(
            "\n### The runs made, against the optimum at their compute and data scale\n\nG / G_opt: the run's "
            "model size over the optimal one at its compute and training set; excess error: the law at the run "
            "minus the law at the optimum (points).\n\n" + to_markdown(summary, floatfmt=".2f"))
    return "".join(parts) + "\n"


def step(table_path: str, input_name: str, settings: Mapping, laws: str, optima_csv: str, runs: str,
         markdown_path: str) -> None:
    """Rule fit_compute_optimal: ``settings`` is clipscale.shaping.compute_optimal's slice."""
    from clipscale.analysis import input_table, write_output

    table = input_table(table_path, input_name, settings)
    fit_cfg = settings.get("fit", {})
    opts = dict(fit_cfg.get("compute_optimal") or {})
    opts["ci"] = fit_cfg.get("ci", 0.95)
    out = analyse(table, input_name, opts, int(settings.get("seed", 0)), settings.get("scales"))
    write_output(laws, out["laws"])
    write_output(optima_csv, out["optima"])
    write_output(runs, out["runs"])
    write_output(markdown_path, markdown(out))
    log.info("%s: %d joint laws, %d optima, %d runs compared", input_name, len(out["laws"]), len(out["optima"]),
             len(out["runs"]))
