"""The joint law of model size and data (``JointLaw``) and its fit (``fit_joint``), with its constants."""

from __future__ import annotations

import math
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy.optimize import least_squares


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
