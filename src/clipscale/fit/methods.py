"""The fitting methods on arrays: binning, the Pareto frontier, the power law, the saturating law."""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Callable, Mapping

import numpy as np

from clipscale.fit.settings import (DEFAULT_BIN_PAD, FitError, MIN_SATURATING_POINTS, SATURATING_DEFAULTS, SAT_B_MAX,
                                    SAT_C_BOUNDS)


# ---------------------------------------------------------------------------------------------
# the fits on arrays


def _line(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """Least squares y = slope * x + intercept (the paper's lstsq)."""
    if len(x) < 2 or np.ptp(x) == 0:
        raise FitError(f"a line needs at least two distinct x values, got {len(np.unique(x))}")
    A = np.vstack([x, np.ones(len(x))]).T
    (slope, intercept), *_ = np.linalg.lstsq(A, y, rcond=None)
    return float(slope), float(intercept)


def _check(C: np.ndarray, E: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    C = np.asarray(C, dtype=float)
    E = np.asarray(E, dtype=float)
    if C.shape != E.shape:
        raise FitError("compute and error arrays differ in length")
    if not (np.all(np.isfinite(C)) and np.all(C > 0)):
        raise FitError("compute must be finite and > 0")
    if not (np.all(np.isfinite(E)) and np.all(E > 0) and np.all(E <= 1)):
        raise FitError("errors must be fractions in (0, 1]")
    return C, E


@dataclass
class Selection:
    """Points a method fitted through: x = log10 C used, y = log10 E, and which run each is."""

    log_c: np.ndarray
    log_e: np.ndarray
    index: np.ndarray  # index into the input arrays of the run behind each point
    bin: np.ndarray  # bin number (1-based) or -1
    n_in_bin: np.ndarray


def bin_edges(log_c: np.ndarray, bins: int, pad: float = DEFAULT_BIN_PAD) -> np.ndarray:
    """Equal-width bin edges over [min, max + pad] of log10 C."""
    if bins < 1:
        raise FitError(f"bins must be >= 1, got {bins}")
    lo, hi = float(np.min(log_c)), float(np.max(log_c)) + pad
    if hi <= lo:
        raise FitError("all points have the same compute: nothing to bin")
    return np.histogram_bin_edges(log_c, bins=bins, range=(lo, hi))


def select_binned(C, E, bins: int = 5, pad: float = DEFAULT_BIN_PAD) -> Selection:
    """The paper's selection: best (lowest-error) run per equal-width bin of log10 C; x = bin centre."""
    C, E = _check(C, E)
    log_c, log_e = np.log10(C), np.log10(E)
    edges = bin_edges(log_c, bins, pad)
    which = np.clip(np.digitize(log_c, edges), 1, bins)  # 1-based, like the paper's code
    xs, ys, idx, nums, counts = [], [], [], [], []
    for i in range(1, bins + 1):
        members = np.flatnonzero(which == i)
        if len(members) == 0:
            continue
        best = members[np.argmin(log_e[members])]
        xs.append((edges[i - 1] + edges[i]) / 2.0)
        ys.append(log_e[best])
        idx.append(best)
        nums.append(i)
        counts.append(len(members))
    return Selection(np.array(xs), np.array(ys), np.array(idx, dtype=int), np.array(nums), np.array(counts))


def select_all(C, E) -> Selection:
    C, E = _check(C, E)
    n = len(C)
    return Selection(np.log10(C), np.log10(E), np.arange(n), -np.ones(n, dtype=int), np.ones(n, dtype=int))


def pareto_mask(C, E) -> np.ndarray:
    """Strict Pareto frontier: True for runs that no other run matches or beats on both compute
    (lower is better) and error (lower is better) while beating it on one."""
    C, E = np.asarray(C, float), np.asarray(E, float)
    mask = np.ones(len(C), dtype=bool)
    for i in range(len(C)):
        dominated = (C <= C[i]) & (E <= E[i]) & ((C < C[i]) | (E < E[i]))
        # of exact duplicates keep the first only
        same = (C == C[i]) & (E == E[i])
        if dominated.any() or (same & (np.arange(len(C)) < i)).any():
            mask[i] = False
    return mask


def select_pareto(C, E) -> Selection:
    C, E = _check(C, E)
    idx = np.flatnonzero(pareto_mask(C, E))
    idx = idx[np.argsort(C[idx])]
    return Selection(np.log10(C[idx]), np.log10(E[idx]), idx, -np.ones(len(idx), dtype=int),
                     np.ones(len(idx), dtype=int))


def power_law(sel: Selection) -> dict[str, float]:
    """alpha, beta of E = beta * C^alpha through the selected points."""
    slope, intercept = _line(sel.log_c, sel.log_e)
    return {"alpha": slope, "beta": 10.0 ** intercept}


def _sat_log_model(x, a, b, c, d):
    return np.log(a * np.power(x + b, c) + d)


def _sat_log_jac(x, a, b, c, d):
    base = x + b
    powc = np.power(base, c)
    h = a * powc + d
    return np.column_stack([powc / h, a * c * powc / base / h, a * powc * np.log(base) / h, 1.0 / h])


def _sat_starts(x: np.ndarray, E: np.ndarray) -> list[list[float]]:
    """Starting values (a, b, c, d) in scaled compute: a grid over the floor d (0 to 95 % of the
    smallest error) and the offset b, with a and c from a log-log line through E - d."""
    e_min = float(E.min())
    starts = []
    for frac in (0.0, 0.25, 0.5, 0.75, 0.95):
        for b0 in (1e-6, 10.0):
            d0 = frac * e_min
            try:
                slope, intercept = _line(np.log(x + b0), np.log(E - d0))
            except FitError:
                continue
            starts.append([math.exp(intercept), b0, min(max(slope, -4.9), -1e-3), d0])
    return starts


def saturating(sel: Selection, start: Mapping[str, float] | None = None,
               huber_delta: float = SATURATING_DEFAULTS["huber_delta"]) -> dict[str, float]:
    """a, b, c, d of E = a * (C + b)^c + d through the selected points (b in GMAC).

    Fitted on ln E with a Huber loss (``huber_delta``: residuals of ln E beyond it count
    linearly, so one outlying run cannot bend the law), compute scaled by its smallest value,
    from a grid of starting values (``_sat_starts``) unless ``start`` is given (the bootstrap
    starts from the full fit, and stops after 100 evaluations: a resample that needs more is
    sliding along a flat valley of the loss); the lowest robust loss wins. Parameters may end at their bounds:
    ``diagnose_saturating`` says when that makes the fit meaningless.
    """
    from scipy.optimize import least_squares

    n = len(sel.log_c)
    if n < MIN_SATURATING_POINTS:
        raise FitError(f"the saturating form needs at least {MIN_SATURATING_POINTS} points, got {n}")
    C = 10.0 ** sel.log_c
    E = 10.0 ** sel.log_e
    scale = float(C.min())
    x = C / scale
    y = np.log(E)
    e_min = float(E.min())
    lower = np.array([1e-12, 0.0, SAT_C_BOUNDS[0], 0.0])
    upper = np.array([np.inf, SAT_B_MAX, SAT_C_BOUNDS[1], e_min * (1 - 1e-9)])
    if start is not None:
        starts = [[start["sat_a"] * scale ** start["sat_c"], start["sat_b"] / scale, start["sat_c"],
                   start["sat_d"]]]
    else:
        starts = _sat_starts(x, E)

    def resid(p):
        return _sat_log_model(x, *p) - y

    def jac(p):
        return _sat_log_jac(x, *p)

    best, best_cost = None, math.inf
    for p0 in starts:
        p0 = np.clip(np.asarray(p0, dtype=float), lower + 1e-12, upper - 1e-12)
        p0[0] = max(p0[0], 1e-9)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                res = least_squares(resid, p0, jac=jac, bounds=(lower, upper), method="trf", loss="huber",
                                    f_scale=float(huber_delta), max_nfev=300 if start is None else 100)
        except (RuntimeError, ValueError):
            continue
        if np.isfinite(res.cost) and np.all(np.isfinite(res.x)) and res.cost < best_cost:
            best, best_cost = res.x, float(res.cost)
    if best is None:
        raise FitError("the saturating form did not converge from any starting value")
    a, b, c, d = (float(v) for v in best)
    return {"sat_a": a * scale ** (-c), "sat_b": b * scale, "sat_c": c, "sat_d": d}


def predict(params: Mapping[str, float], C) -> np.ndarray:
    """Predicted error fraction at compute C for power-law or saturating parameters."""
    C = np.asarray(C, dtype=float)
    if "alpha" in params:
        return params["beta"] * np.power(C, params["alpha"])
    return params["sat_a"] * np.power(C + params["sat_b"], params["sat_c"]) + params["sat_d"]


SELECTORS: dict[str, Callable[..., Selection]] = {
    "binned": select_binned,
    "direct": lambda C, E, **_: select_all(C, E),
    "pareto": lambda C, E, **_: select_pareto(C, E),
    "saturating": lambda C, E, **_: select_pareto(C, E),
}


def fit_arrays(C, E, method: str, bins: int = 5, pad: float = DEFAULT_BIN_PAD,
               start: Mapping[str, float] | None = None,
               huber_delta: float = SATURATING_DEFAULTS["huber_delta"]) -> tuple[dict[str, float], Selection]:
    """Fit one method to arrays of compute and error; returns (parameters, selected points)."""
    if method not in SELECTORS:
        raise FitError(f"unknown method {method!r} (expected one of {list(SELECTORS)})")
    sel = SELECTORS[method](C, E, bins=bins, pad=pad) if method == "binned" else SELECTORS[method](C, E)
    if method == "saturating":
        return saturating(sel, start, huber_delta=huber_delta), sel
    return power_law(sel), sel
