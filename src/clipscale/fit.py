"""Scaling-law fits: E = beta * C^alpha, as the paper fits them, and two variants.

E is the error as a fraction (1 - accuracy or 1 - recall@5), C the total training compute in GMAC
(GMAC per sample x exact samples seen); only final checkpoints count.

Methods (the ``method`` column of every output):

- ``binned``: the paper's fit (supplement B.2.1, footnote 3). log10 C is cut into ``bins``
  equal-width bins over [min, max + pad] (pad = 0.1 decades, as in the paper's released plotting
  code, so the largest run falls inside the last bin); within each bin the best (lowest-error)
  run is kept; a least-squares line in log-log space goes through (bin centre, best log10 E).
  The x of a point is the CENTRE of its bin, not the run's own compute. Empty bins are skipped.
- ``direct``: least squares in log-log space through all points. Used for OpenAI's three models
  (the paper fits them directly) and for any source with no more distinct compute values than
  bins (binning would not select anything).
- ``pareto``: least squares in log-log space through the strict Pareto frontier (runs that no
  other run beats or ties on both compute and error).
- ``saturating``: E = a * (C + b)^c + d (a > 0, 0 <= b <= 1000 min C, -5 <= c < 0,
  0 <= d < min E) through the Pareto frontier; needs at least 6 frontier points. Fitted robustly
  (as LAION's scaling-laws-for-comparison and Chinchilla do): a Huber loss on the residuals of
  ln E (``fit.saturating.huber_delta``), from a grid of starting values, the best wins. A
  saturating fit is then *diagnosed* (``diagnose_saturating``) and reported as not identifiable,
  with its reasons (``note``), when a parameter sits at a bound (c at -5 or 0, d at 0 or at the
  smallest error, b at its upper bound), when the bootstrap interval of c or d spans more than
  ``fit.saturating.max_span_decades`` orders of magnitude (or reaches d = 0), when fewer than half
  the resamples could be fitted, or when it is no better than the plain power law through the
  same points: AIC = n ln(SSE/n) + 2k (SSE of log10 E, k = 4 vs 2) must fall by at least
  ``fit.saturating.min_aic_gain``. A fit that is not identifiable has no formula in the tables,
  no prediction and no curve in the figures.

The Pareto and saturating variants are not fitted for OpenAI (three models, fitted directly).

Uncertainty: a pairs bootstrap (``bootstrap`` resamples of the runs, with replacement, the whole
method re-applied to each resample, bins included); percentile intervals at level ``ci`` for
alpha, beta, the saturating parameters and every prediction. Resamples where the method cannot
fit (e.g. a single distinct compute value) are dropped and counted (``bootstrap_valid``). Each
fit draws from its own generator seeded with (seed, crc32 of the fit's key), so results do not
depend on the order or the number of fits.

Seeds (``grid.seeds``): rows of a table with a ``seed`` column that differ only in it are one
*cell* (model, data, samples seen) trained several times. A cell's point is the mean error of its
seeds; the bootstrap then resamples cells and, within each drawn cell, its seeds (a two-stage
bootstrap), so that intervals carry the seed noise. A table without seeds (or one seed per cell)
is fitted and resampled exactly as before.

Few computes (``fit.min_bootstrap_computes``, 5): a power law fitted on runs at fewer distinct
computes gets a t-interval of its least-squares line in log-log space instead (n - 2 degrees of
freedom through the points it goes through); its draws (for comparisons, crossings and bands)
come from the matching multivariate t, the posterior of (alpha, log10 beta) under a flat prior.
The ``interval`` column of the coefficients says which ("bootstrap" or "t").

Prediction interval (``error_pi_lo``, ``error_pi_hi``): where one new run at C may land, the
law's uncertainty plus one run's scatter around it. Bootstrap: every draw's prediction combined
with every residual of a single run around the fitted law (log10 E, through the points the law
goes through, with each of their seeds; scaled by sqrt(n / (n - k)) for the k fitted parameters).
t: ŷ ± t·sqrt(s²(1 + 1/n + (x - x̄)²/Sxx) + σ²_seed(1 - 1/k)), σ²_seed the pooled variance of
log10 E between seeds of a cell, k the seeds per cell.

Command line: ``clipscale fit --table T.parquet --coefficients C.csv ...``.
"""

from __future__ import annotations

import logging
import math
import warnings
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

from clipscale.config import format_count, load_schema, parse_count, schema_default
from clipscale.table import read_table

log = logging.getLogger(__name__)

METHODS = ("binned", "direct", "pareto", "saturating")
DEFAULT_BIN_PAD = schema_default("fit", "bin_pad")  # decades above the largest log10 C (the paper's code: 0.1)
DIRECT_SOURCES = ("openai",)
MIN_SATURATING_POINTS = 6  # 4 parameters + 2 degrees of freedom
MIN_BOOTSTRAP_COMPUTES = schema_default("fit", "min_bootstrap_computes")  # fewer: a t-interval
T_METHODS = ("binned", "direct", "pareto")  # the power laws that get a t-interval on few computes
CELL_COLUMNS = ("source", "model", "data", "samples_seen", "total_gmac")  # rows of one cell differ in seed only
#: the saturating fit's settings (config fit.saturating): Huber delta on ln E residuals, the widest
#: bootstrap interval of c or d (orders of magnitude), the least AIC gain over the plain power law
SATURATING_DEFAULTS = {k: v["default"] for k, v in
                       load_schema()["properties"]["fit"]["properties"]["saturating"]["properties"].items()}
SAT_C_BOUNDS = (-5.0, -1e-6)
SAT_B_MAX = 1e3  # in units of the smallest compute

#: (architecture, samples seen) pairs beyond the published runs, as in the paper's Table 4
#: (the paper trained up to ViT-H/14 on 34B and ViT-g/14 on 13B samples seen).
DEFAULT_PUBLISHED_PREDICTIONS = [
    {"model": "ViT-L/14", "samples_seen": "68B"},
    {"model": "ViT-H/14", "samples_seen": "68B"},
    {"model": "ViT-g/14", "samples_seen": "34B"},
    {"model": "ViT-g/14", "samples_seen": "68B"},
    {"model": "ViT-G/14", "samples_seen": "34B"},
    {"model": "ViT-G/14", "samples_seen": "68B"},
]

COEFFICIENT_COLUMNS = [
    "input", "source", "task", "dataset", "metric", "method", "n_points", "n_fit", "c_min", "c_max",
    "alpha", "alpha_lo", "alpha_hi", "beta", "beta_lo", "beta_hi",
    "sat_a", "sat_b", "sat_c", "sat_c_lo", "sat_c_hi", "sat_d", "sat_d_lo", "sat_d_hi",
    "r2_log", "rmse_log", "bins", "bootstrap", "bootstrap_valid", "ci", "formula", "identifiable", "note",
    "interval", "n_runs", "seeds", "seed_sd_log",
]
PREDICTION_COLUMNS = [
    "input", "source", "task", "dataset", "metric", "method", "model", "samples_seen",
    "samples_seen_label", "gmac_per_sample", "total_gmac", "beyond_data",
    "error", "error_lo", "error_hi", "value", "value_lo", "value_hi",
    "error_pi_lo", "error_pi_hi", "value_pi_lo", "value_pi_hi",
]
POINT_COLUMNS = [
    "input", "source", "task", "dataset", "metric", "method", "total_gmac", "error", "bin",
    "n_in_bin", "run_total_gmac", "model", "data", "samples_seen_label",
]
# the bootstrap draws of the paper's fits (binned or direct): what figures draw bands from
DRAW_COLUMNS = ["input", "source", "task", "dataset", "metric", "method", "draw", "alpha", "beta"]
PAPER_METHODS = ("binned", "direct")


class FitError(ValueError):
    """Points that the method cannot fit (too few, or a single compute value)."""


@dataclass(frozen=True)
class FitSettings:
    """The config's ``fit`` section, typed once: what the fit, the analyses and the figures read.

    ``of`` builds it from a fit section (a validated config's, or a partial mapping for use
    outside the pipeline): a missing key takes the schema's default, written nowhere else."""

    bins: int
    bin_pad: float
    bootstrap: int
    ci: float
    methods: tuple[str, ...]
    saturating: dict
    predictions: tuple = ()
    extrapolation: dict = field(default_factory=dict)
    min_bootstrap_computes: int = MIN_BOOTSTRAP_COMPUTES

    @classmethod
    def of(cls, fit_config: Mapping | None = None) -> "FitSettings":
        given = dict(fit_config or {})

        def get(key):
            return given[key] if key in given else schema_default("fit", key)

        return cls(bins=int(get("bins")), bin_pad=float(get("bin_pad")), bootstrap=int(get("bootstrap")),
                   ci=float(get("ci")), methods=tuple(get("methods")),
                   saturating={**SATURATING_DEFAULTS, **(given.get("saturating") or {})},
                   predictions=tuple(given.get("predictions") or ()),
                   extrapolation=dict(given.get("extrapolation") or {}),
                   min_bootstrap_computes=int(get("min_bootstrap_computes")))


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


# ---------------------------------------------------------------------------------------------
# fits with bootstrap intervals


@dataclass
class Fit:
    """One fitted scaling law with its bootstrap draws."""

    key: dict  # input, source, task, dataset, metric
    method: str
    params: dict[str, float]
    selection: Selection
    points: pd.DataFrame  # the final runs it was fitted on
    bins: int
    ci: float
    bootstrap: int
    draws: list[dict[str, float]] = field(default_factory=list)
    diagnosis: list[str] = field(default_factory=list)  # why a saturating fit is not identifiable
    interval_method: str = "bootstrap"  # or "t" (few computes: ``t_line``)
    line: dict | None = None  # a t-interval's least-squares statistics (``t_line``)
    n_runs: int | None = None  # rows fitted (cells x their seeds); None: one per point
    seeds: int = 1  # the most seeds of a cell
    seed_var: float = 0.0  # pooled variance of log10 E between the seeds of a cell (0: no seeds)
    seed_k: float = 1.0  # mean seeds per cell of the points the law goes through
    residuals: np.ndarray | None = None  # single runs' log10 E around the law (prediction interval)

    @property
    def identifiable(self) -> bool:
        """False for a saturating fit that ``diagnose_saturating`` found meaningless."""
        return not self.diagnosis

    @property
    def note(self) -> str:
        return "; ".join(self.diagnosis)

    @property
    def c_range(self) -> tuple[float, float]:
        return float(self.points["total_gmac"].min()), float(self.points["total_gmac"].max())

    def predict(self, C) -> np.ndarray:
        return predict(self.params, C)

    def interval(self, C) -> tuple[np.ndarray, np.ndarray]:
        """Interval of the law's prediction at C: the t band (``interval_method`` "t"), else the
        percentile bootstrap interval (NaN without draws)."""
        C = np.atleast_1d(np.asarray(C, dtype=float))
        if self.interval_method == "t":
            return self._t_band(C, single=False)
        if len(self.draws) < 2:
            nan = np.full(C.shape, np.nan)
            return nan, nan
        preds = np.vstack([predict(d, C) for d in self.draws])
        q = (1 - self.ci) / 2
        return np.quantile(preds, q, axis=0), np.quantile(preds, 1 - q, axis=0)

    def prediction_interval(self, C) -> tuple[np.ndarray, np.ndarray]:
        """Where one new run at C may land: the law's uncertainty and a single run's scatter
        (module docstring). NaN where it cannot be estimated."""
        C = np.atleast_1d(np.asarray(C, dtype=float))
        if self.interval_method == "t":
            return self._t_band(C, single=True)
        nan = np.full(C.shape, np.nan)
        if len(self.draws) < 2 or self.residuals is None or len(self.residuals) < 1:
            return nan, nan
        logs = np.log10(np.clip(np.vstack([predict(d, C) for d in self.draws]), 1e-300, None))
        both = logs[:, None, :] + self.residuals[None, :, None]  # every draw with every residual
        both = both.reshape(-1, len(C))
        q = (1 - self.ci) / 2
        return 10.0 ** np.quantile(both, q, axis=0), 10.0 ** np.quantile(both, 1 - q, axis=0)

    def _t_band(self, C: np.ndarray, single: bool) -> tuple[np.ndarray, np.ndarray]:
        line = self.line
        if not line or line["df"] < 1:
            nan = np.full(C.shape, np.nan)
            return nan, nan
        from scipy import stats

        x = np.log10(C)
        t = stats.t.ppf(0.5 + self.ci / 2, line["df"])
        var = line["s"] ** 2 * (1.0 / line["n"] + (x - line["xbar"]) ** 2 / line["sxx"])
        if single:
            var = var + line["s"] ** 2 + self.seed_var * max(0.0, 1.0 - 1.0 / self.seed_k)
        y = line["intercept"] + line["slope"] * x
        half = t * np.sqrt(var)
        return 10.0 ** (y - half), 10.0 ** (y + half)

    def param_interval(self, name: str) -> tuple[float, float]:
        if self.interval_method == "t" and name in ("alpha", "beta"):
            line = self.line
            if not line or line["df"] < 1:
                return math.nan, math.nan
            from scipy import stats

            t = stats.t.ppf(0.5 + self.ci / 2, line["df"])
            if name == "alpha":
                se = line["s"] / math.sqrt(line["sxx"])
                return line["slope"] - t * se, line["slope"] + t * se
            se = line["s"] * math.sqrt(1.0 / line["n"] + line["xbar"] ** 2 / line["sxx"])
            return 10.0 ** (line["intercept"] - t * se), 10.0 ** (line["intercept"] + t * se)
        vals = np.array([d[name] for d in self.draws if name in d])
        if len(vals) < 2:
            return math.nan, math.nan
        q = (1 - self.ci) / 2
        return float(np.quantile(vals, q)), float(np.quantile(vals, 1 - q))

    def formula(self, digits: int = 2, tex: bool = False) -> str:
        """"E = 5.86·C^-0.11" (tex: matplotlib mathtext, for legends)."""
        p = self.params
        if "alpha" in p:
            beta, alpha = _fmt(p["beta"], digits), f"{p['alpha']:.{digits}f}"
            return f"$E = {beta} \\cdot C^{{{alpha}}}$" if tex else f"E = {beta}·C^{alpha}"
        a, b = _fmt(p["sat_a"], digits), _fmt(p["sat_b"], digits)
        c, d = f"{p['sat_c']:.{digits}f}", f"{p['sat_d']:.{digits + 1}f}"
        if tex:
            return f"$E = {a} \\cdot (C + {b})^{{{c}}} + {d}$"
        return f"E = {a}·(C + {b})^{c} + {d}"

    def goodness(self) -> tuple[float, float]:
        """R^2 and RMSE in log10 E over the selected points."""
        y = self.selection.log_e
        yhat = np.log10(self.predict(10.0 ** self.selection.log_c))
        resid = y - yhat
        ss_tot = float(np.sum((y - y.mean()) ** 2))
        r2 = 1 - float(np.sum(resid**2)) / ss_tot if ss_tot > 0 else math.nan
        return r2, float(np.sqrt(np.mean(resid**2)))


def diagnose_saturating(fit: Fit, max_span_decades: float = SATURATING_DEFAULTS["max_span_decades"],
                        min_aic_gain: float = SATURATING_DEFAULTS["min_aic_gain"]) -> list[str]:
    """Why a saturating fit is not identifiable (empty: it is). The criteria (module docstring):
    a parameter at a bound, a bootstrap interval of c or d spanning more than
    ``max_span_decades`` orders of magnitude, fewer than half the resamples fitted, an AIC gain
    over the plain power law through the same points below ``min_aic_gain``."""
    p = fit.params
    reasons = []
    e_min = float(10.0 ** fit.selection.log_e.min())
    c_min = float(10.0 ** fit.selection.log_c.min())
    c_lo = SAT_C_BOUNDS[0]
    if p["sat_c"] <= c_lo + 1e-3:
        reasons.append(f"c at its bound {c_lo:g}")
    elif p["sat_c"] >= -1e-4:
        reasons.append("c at its bound 0 (no decrease)")
    if p["sat_d"] <= 1e-6 * e_min:
        reasons.append("d at its bound 0 (no floor: the plain power law)")
    elif p["sat_d"] >= e_min * (1 - 1e-3):
        reasons.append(f"d at its bound, the smallest error {e_min:.3g}")
    if p["sat_b"] >= SAT_B_MAX * c_min * (1 - 1e-3):
        reasons.append(f"b at its bound {SAT_B_MAX:g} x the smallest compute")
    if fit.bootstrap:
        if len(fit.draws) < fit.bootstrap / 2:
            reasons.append(f"only {len(fit.draws)} of {fit.bootstrap} bootstrap resamples could be fitted")
        if len(fit.draws) >= 2:
            lo, hi = fit.param_interval("sat_c")
            span = math.log10(lo / hi) if hi < 0 else math.inf
            if span > max_span_decades:
                reasons.append(f"the interval of c [{lo:.3g}, {hi:.3g}] spans {span:.1f} orders of magnitude")
            lo, hi = fit.param_interval("sat_d")
            if lo <= 1e-6 * e_min:
                reasons.append(f"the interval of d [{lo:.3g}, {hi:.3g}] reaches 0")
            elif math.log10(hi / lo) > max_span_decades:
                reasons.append(f"the interval of d [{lo:.3g}, {hi:.3g}] spans {math.log10(hi / lo):.1f} "
                               "orders of magnitude")
    gain = aic_gain(fit)
    if not gain >= min_aic_gain:
        reasons.append(f"no better than the plain power law through the same points (AIC gain {gain:.1f} < "
                       f"{min_aic_gain:g})")
    return reasons


def aic_gain(fit: Fit) -> float:
    """AIC of the plain power law (least squares in log-log, k = 2) minus the saturating fit's
    (k = 4), through the fit's points: AIC = n ln(SSE/n) + 2k, SSE of log10 E."""
    sel = fit.selection
    n = len(sel.log_c)
    pl = power_law(sel)
    sse_pl = float(np.sum((sel.log_e - np.log10(predict(pl, 10.0 ** sel.log_c))) ** 2))
    sse_sat = float(np.sum((sel.log_e - np.log10(fit.predict(10.0 ** sel.log_c))) ** 2))
    tiny = 1e-30
    return n * math.log(max(sse_pl, tiny) / max(sse_sat, tiny)) - 2 * (4 - 2)


def _fmt(v: float, digits: int) -> str:
    if v == 0 or (1e-3 <= abs(v) < 1e4):
        return f"{v:.{digits}f}"
    return f"{v:.{digits}e}"


def _seed(seed: int, key: Mapping) -> np.random.Generator:
    """The fit's own generator: (seed, crc32 of source|task|dataset|metric|), and of the key's
    ``subset`` too when it has one (a comparison side restricted to some data or models)."""
    text = "|".join(str(key[k]) for k in ("source", "task", "dataset", "metric")) + "|"
    if key.get("subset"):
        text += str(key["subset"])
    return np.random.default_rng([int(seed), zlib.crc32(text.encode())])


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


def t_line(sel: Selection) -> dict:
    """Least-squares statistics of log10 E on log10 C through the selected points: slope,
    intercept, n, x̄, Sxx, s (residual standard deviation, n - 2 degrees of freedom), df."""
    x, y = sel.log_c, sel.log_e
    slope, intercept = _line(x, y)
    n = len(x)
    df = n - 2
    sse = float(np.sum((y - (intercept + slope * x)) ** 2))
    return {"slope": slope, "intercept": intercept, "n": n, "xbar": float(x.mean()),
            "sxx": float(np.sum((x - x.mean()) ** 2)), "df": df, "s": math.sqrt(sse / df) if df > 0 else math.nan}


def t_draws(line: Mapping, count: int, rng: np.random.Generator) -> list[dict[str, float]]:
    """Draws of (alpha, beta) from the multivariate t of a least-squares line: (slope, intercept)
    + z sqrt(df / chi2_df), z ~ N(0, s² (XᵀX)⁻¹); their percentiles are the t-intervals."""
    if line["df"] < 1 or count < 1 or not np.isfinite(line["s"]):
        return []
    n, xbar, sxx, s = line["n"], line["xbar"], line["sxx"], line["s"]
    if not sxx > 0:
        return []
    # z = s L x with L L^T = (X^T X)^-1 (positive definite where sxx > 0): numpy's multivariate
    # normal by Cholesky, without its failure where s = 0 (points exactly on a line: every draw is
    # that line, a zero-width interval)
    unit = np.array([[1.0 / sxx, -xbar / sxx], [-xbar / sxx, 1.0 / n + xbar ** 2 / sxx]])
    z = s * (rng.standard_normal((count, 2)) @ np.linalg.cholesky(unit).T)
    w = np.sqrt(line["df"] / rng.chisquare(line["df"], size=count))
    slopes = line["slope"] + z[:, 0] * w
    intercepts = line["intercept"] + z[:, 1] * w
    # with 1 degree of freedom the tails are Cauchy's: a draw whose beta over- or underflows a
    # float is dropped (bootstrap_valid counts the rest)
    ok = np.abs(intercepts) < 300
    return [{"alpha": float(a), "beta": float(10.0 ** b)} for a, b in zip(slopes[ok], intercepts[ok])]


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


# ---------------------------------------------------------------------------------------------
# output tables


def coefficients_frame(fits: Sequence[Fit]) -> pd.DataFrame:
    rows = []
    for f in fits:
        r2, rmse = f.goodness()
        row = dict(f.key, method=f.method, n_points=len(f.points), n_fit=len(f.selection.log_c),
                   c_min=f.c_range[0], c_max=f.c_range[1], r2_log=r2, rmse_log=rmse, bins=f.bins,
                   bootstrap=f.bootstrap, bootstrap_valid=len(f.draws), ci=f.ci,
                   formula=f.formula() if f.identifiable else "", identifiable=f.identifiable, note=f.note,
                   interval=f.interval_method, n_runs=f.n_runs if f.n_runs is not None else len(f.points),
                   seeds=f.seeds, seed_sd_log=math.sqrt(f.seed_var) if f.seeds > 1 else math.nan)
        for name in ("alpha", "beta", "sat_a", "sat_b", "sat_c", "sat_d"):
            row[name] = f.params.get(name, math.nan)
        for name in ("alpha", "beta", "sat_c", "sat_d"):
            lo, hi = f.param_interval(name) if name in f.params else (math.nan, math.nan)
            row[f"{name}_lo"], row[f"{name}_hi"] = lo, hi
        rows.append(row)
    return pd.DataFrame(rows, columns=COEFFICIENT_COLUMNS)


def points_frame(fits: Sequence[Fit]) -> pd.DataFrame:
    rows = []
    for f in fits:
        sel = f.selection
        for x, y, i, b, n in zip(sel.log_c, sel.log_e, sel.index, sel.bin, sel.n_in_bin):
            run = f.points.iloc[int(i)]
            rows.append(dict(f.key, method=f.method, total_gmac=10.0**x, error=10.0**y, bin=int(b),
                             n_in_bin=int(n), run_total_gmac=float(run["total_gmac"]), model=run["model"],
                             data=run["data"], samples_seen_label=run["samples_seen_label"]))
    return pd.DataFrame(rows, columns=POINT_COLUMNS)


def draws_frame(fits: Sequence[Fit]) -> pd.DataFrame:
    """The bootstrap draws (alpha, beta) of the paper's fits, one row per draw."""
    rows = [dict(f.key, method=f.method, draw=i, alpha=d["alpha"], beta=d["beta"])
            for f in fits if f.method in PAPER_METHODS for i, d in enumerate(f.draws)]
    return pd.DataFrame(rows, columns=DRAW_COLUMNS)


def paper_laws(fits: Iterable[Fit]) -> dict[tuple[str, str, str], Fit]:
    """(source, dataset, metric) -> the paper's fit (binned or direct): the laws figures draw."""
    return {(f.key["source"], f.key["dataset"], f.key["metric"]): f for f in fits if f.method in PAPER_METHODS}


def laws_from_frames(coefficients: pd.DataFrame, draws: pd.DataFrame) -> dict[tuple[str, str, str], Fit]:
    """The paper's fits as the fit step wrote them (coefficients.csv, draws.csv), for drawing:
    parameters, bootstrap draws and interval level (no points: the figure has the table's)."""
    out = {}
    key_cols = ["input", "source", "task", "dataset", "metric", "method"]
    by_key = {k: g for k, g in draws.groupby(key_cols, sort=False)} if len(draws) else {}
    for row in coefficients[coefficients["method"].isin(PAPER_METHODS)].to_dict("records"):
        key = {k: row[k] for k in key_cols[:-1]}
        mine = by_key.get(tuple(row[k] for k in key_cols))
        f = Fit(key, row["method"], {"alpha": float(row["alpha"]), "beta": float(row["beta"])}, None,
                pd.DataFrame(), int(row["bins"]), float(row["ci"]), int(row["bootstrap"]),
                draws=[] if mine is None else mine.sort_values("draw")[["alpha", "beta"]].to_dict("records"))
        out[(key["source"], key["dataset"], key["metric"])] = f
    return out


def resolve_targets(targets: Iterable[Mapping], df: pd.DataFrame, arch_gmac: Mapping[str, float],
                    model_gmac: Mapping[str, float] | None = None) -> list[dict]:
    """(model, samples seen) pairs -> dicts with GMAC per sample and total compute.

    GMAC per sample comes from ``model_gmac`` (e.g. the config's models), else from the table's
    rows of that model, else from the paper's Table 25 (``arch_gmac``, by "ViT-H/14" or
    "ViT-H-14"). Pairs whose model is found nowhere are logged and skipped.
    """
    table_gmac = {}
    for col in ("model", "arch_id"):
        for name, g in df.groupby(col)["gmac_per_sample"]:
            table_gmac.setdefault(name, float(g.median()))
    out = []
    for t in targets:
        name = str(t["model"])
        samples = parse_count(t["samples_seen"])
        gmac = (model_gmac or {}).get(name) or table_gmac.get(name) or arch_gmac.get(name)
        if not gmac:
            log.warning("prediction target %s: no GMAC per sample known for this model; skipped", name)
            continue
        label = t["samples_seen"] if isinstance(t["samples_seen"], str) else format_count(samples)
        out.append({"model": name, "samples_seen": samples, "samples_seen_label": label,
                    "gmac_per_sample": float(gmac), "total_gmac": float(gmac) * samples})
    return out


def default_targets(df: pd.DataFrame, input_name: str) -> list[dict]:
    """Prediction targets when the config names none: the Table 4 style pairs for the published
    input; each of our models at 2x and 4x the largest samples seen for ours."""
    if input_name == "published":
        return list(DEFAULT_PUBLISHED_PREDICTIONS)
    out = []
    if len(df):
        most = int(df["samples_seen"].max())
        for model in sorted(df["model"].unique()):
            for factor in (2, 4):
                out.append({"model": model, "samples_seen": format_count(most * factor)})
    return out


def predictions_frame(fits: Sequence[Fit], targets: Sequence[Mapping]) -> pd.DataFrame:
    rows = []
    for f in fits:
        if not targets:
            break
        if not f.identifiable:  # no prediction from a meaningless law (the coefficients say why)
            continue
        C = np.array([t["total_gmac"] for t in targets])
        est = f.predict(C)
        lo, hi = f.interval(C)
        plo, phi = f.prediction_interval(C)
        for t, e, l, h, pl, ph in zip(targets, est, lo, hi, plo, phi):
            rows.append(dict(f.key, method=f.method, model=t["model"], samples_seen=int(t["samples_seen"]),
                             samples_seen_label=t["samples_seen_label"], gmac_per_sample=t["gmac_per_sample"],
                             total_gmac=t["total_gmac"], beyond_data=bool(t["total_gmac"] > f.c_range[1]),
                             error=float(e), error_lo=float(l), error_hi=float(h), value=100 * (1 - float(e)),
                             value_lo=100 * (1 - float(h)), value_hi=100 * (1 - float(l)),
                             error_pi_lo=float(pl), error_pi_hi=float(ph), value_pi_lo=100 * (1 - float(ph)),
                             value_pi_hi=100 * (1 - float(pl))))
    return pd.DataFrame(rows, columns=PREDICTION_COLUMNS)


def to_markdown(df: pd.DataFrame, columns: Sequence[str] | None = None, floatfmt: str = ".4g") -> str:
    """A GitHub-flavoured Markdown table (no tabulate needed)."""
    df = df[list(columns)] if columns else df

    def cell(v) -> str:
        if isinstance(v, (float, np.floating)):
            return "" if math.isnan(v) else format(float(v), floatfmt)
        return str(v).replace("|", "\\|")

    lines = ["| " + " | ".join(map(str, df.columns)) + " |", "|" + "---|" * len(df.columns)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in df.itertuples(index=False)]
    return "\n".join(lines) + "\n"


def coefficients_markdown(coef: pd.DataFrame) -> str:
    """Readable Markdown of the coefficient table: estimate [lo, hi] per parameter."""
    if coef.empty:
        return "_no fit_\n"

    def ci(est, lo, hi, fmt):
        if math.isnan(est):
            return ""
        if math.isnan(lo):
            return format(est, fmt)
        return f"{format(est, fmt)} [{format(lo, fmt)}, {format(hi, fmt)}]"

    coef = coef.copy()
    ok = _identifiable(coef)
    for name in ("sat_c", "sat_c_lo", "sat_c_hi", "sat_d", "sat_d_lo", "sat_d_hi"):
        coef.loc[~ok, name] = math.nan
    notes = coef["note"] if "note" in coef else pd.Series([""] * len(coef), index=coef.index)
    formula = [f if k else f"not identifiable: {n}" for f, k, n in zip(coef["formula"].fillna(""), ok,
                                                                         notes.fillna(""))]
    out = pd.DataFrame({
        "input": coef["input"], "source": coef["source"], "dataset": coef["dataset"], "metric": coef["metric"],
        "method": coef["method"],
        # runs fitted (with seeds: every seed; a law goes through its cells' means)
        "runs": coef["n_runs"].fillna(coef["n_points"]) if "n_runs" in coef else coef["n_points"],
        "fit pts": coef["n_fit"],
        "alpha": [ci(*v, ".3f") for v in zip(coef["alpha"], coef["alpha_lo"], coef["alpha_hi"])],
        "beta": [ci(*v, ".3g") for v in zip(coef["beta"], coef["beta_lo"], coef["beta_hi"])],
        "c (saturating)": [ci(*v, ".3f") for v in zip(coef["sat_c"], coef["sat_c_lo"], coef["sat_c_hi"])],
        "d (saturating)": [ci(*v, ".3f") for v in zip(coef["sat_d"], coef["sat_d_lo"], coef["sat_d_hi"])],
        "R² (log)": coef["r2_log"], "formula": formula,
    })
    if "interval" in coef:  # bootstrap, or t (a power law on fewer than fit.min_bootstrap_computes computes)
        out.insert(7, "interval", coef["interval"].fillna(""))
    if "seeds" in coef and (pd.to_numeric(coef["seeds"], errors="coerce").fillna(1) > 1).any():
        out.insert(6, "seeds", coef["seeds"])
    level = coef["ci"].iloc[0]
    head = (f"Scaling-law fits, E = β·C^α (C in GMAC, E error fraction); [{level:.0%} interval: bootstrap, or "
            f"t on fewer than {MIN_BOOTSTRAP_COMPUTES} distinct computes unless configured otherwise]\n\n")
    return head + to_markdown(out, floatfmt=".3f")


def _identifiable(coef: pd.DataFrame) -> pd.Series:
    """The coefficient rows whose law means something (tables written before the column: all)."""
    if "identifiable" not in coef:
        return pd.Series(True, index=coef.index)
    return coef["identifiable"].map(lambda v: str(v).lower() not in ("false", "0", "nan", "")).astype(bool)


def predictions_markdown(pred: pd.DataFrame) -> str:
    if pred.empty:
        return "_no prediction_\n"
    out = pd.DataFrame({
        "input": pred["input"], "source": pred["source"], "dataset": pred["dataset"], "metric": pred["metric"],
        "method": pred["method"], "model": pred["model"], "samples seen": pred["samples_seen_label"],
        "compute (GMAC)": [f"{v:.3g}" for v in pred["total_gmac"]],
        "predicted value %": [
            f"{v:.1f}" + ("" if math.isnan(lo) else f" [{lo:.1f}, {hi:.1f}]")
            for v, lo, hi in zip(pred["value"], pred["value_lo"], pred["value_hi"])
        ],
        "beyond data": pred["beyond_data"],
    })
    if "value_pi_lo" in pred:
        out.insert(9, "one run % (PI)", [
            "" if math.isnan(lo) else f"[{lo:.1f}, {hi:.1f}]" for lo, hi in zip(pred["value_pi_lo"], pred["value_pi_hi"])])
    return ("Predicted performance (value = 100·(1 − E)) with the law's interval, and the prediction interval "
            "(PI) where one new run may land\n\n" + to_markdown(out))


# ---------------------------------------------------------------------------------------------
# the whole step, as run by the pipeline


def run(table: pd.DataFrame, input_name: str, fit_config: Mapping, seed: int, arch_gmac: Mapping[str, float],
        model_gmac: Mapping[str, float] | None = None, groups: Mapping[str, Iterable[str]] | None = None
        ) -> dict[str, pd.DataFrame]:
    """Fit a results table as configured; returns coefficients, predictions and points frames."""
    from clipscale.table import add_group_means

    if groups:
        table = add_group_means(table, groups)
    st = FitSettings.of(fit_config)
    # the paper's method always (the figures draw its laws), then the configured others
    methods = list(dict.fromkeys(["paper", *st.methods]))
    fits = fit_table(table, input_name=input_name, bins=st.bins, bootstrap=st.bootstrap, ci=st.ci,
                     seed=seed, methods=methods, pad=st.bin_pad, saturating_options=st.saturating,
                     min_bootstrap_computes=st.min_bootstrap_computes)
    wanted = list(st.predictions) or default_targets(table, input_name)
    targets = resolve_targets(wanted, table, arch_gmac, model_gmac)
    return {
        "coefficients": coefficients_frame(fits),
        "predictions": predictions_frame(fits, targets),
        "points": points_frame(fits),
        "draws": draws_frame(fits),
    }


def model_gmac_of(config: Mapping) -> dict[str, float]:
    """GMAC per sample that the config states for its models, by name and by label."""
    out = {}
    for name, spec in config.get("models", {}).items():
        if spec.get("gmac_per_sample"):
            out[name] = float(spec["gmac_per_sample"])
            if spec.get("label"):
                out[spec["label"]] = float(spec["gmac_per_sample"])
    return out


def run_step(table_path: str, input_name: str, config: Mapping, coefficients: str, predictions: str,
             points: str, coefficients_md: str | None = None, predictions_md: str | None = None,
             draws: str | None = None) -> None:
    """The pipeline's fit of one input ("published" or "ours"): read, fit, write CSV and Markdown."""
    from clipscale.reference import gmac_lookup
    from clipscale.table import groups_of

    table = read_table(table_path)
    fit_config = dict(config.get("fit", {}))
    groups = groups_of(config) if input_name == "ours" else None
    out = run(table, input_name, fit_config, int(config.get("seed", 0)), gmac_lookup(),
              model_gmac=model_gmac_of(config), groups=groups)
    write_outputs(out, coefficients, predictions, points, draws=draws)
    if coefficients_md:
        Path(coefficients_md).parent.mkdir(parents=True, exist_ok=True)
        Path(coefficients_md).write_text(coefficients_markdown(out["coefficients"]))
    if predictions_md:
        Path(predictions_md).parent.mkdir(parents=True, exist_ok=True)
        Path(predictions_md).write_text(predictions_markdown(out["predictions"]))
    log.info("%s: %d fits, %d predictions", input_name, len(out["coefficients"]), len(out["predictions"]))


def collect_step(coefficient_csvs: Sequence[str], prediction_csvs: Sequence[str], coefficients: str,
                 predictions: str, coefficients_md: str | None = None, predictions_md: str | None = None) -> None:
    """Concatenate the per-input fits into the pipeline's coefficient and prediction tables."""
    coef = pd.concat([pd.read_csv(p) for p in coefficient_csvs], ignore_index=True) if coefficient_csvs \
        else pd.DataFrame(columns=COEFFICIENT_COLUMNS)
    pred = pd.concat([pd.read_csv(p) for p in prediction_csvs], ignore_index=True) if prediction_csvs \
        else pd.DataFrame(columns=PREDICTION_COLUMNS)
    for path, frame in ((coefficients, coef), (predictions, pred)):
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        frame.to_csv(path, index=False)
    if coefficients_md:
        Path(coefficients_md).parent.mkdir(parents=True, exist_ok=True)
        Path(coefficients_md).write_text(coefficients_markdown(coef))
    if predictions_md:
        Path(predictions_md).parent.mkdir(parents=True, exist_ok=True)
        Path(predictions_md).write_text(predictions_markdown(pred))


def write_outputs(out: Mapping[str, pd.DataFrame], coefficients: str, predictions: str | None = None,
                  points: str | None = None, markdown_dir: str | None = None,
                  markdown_names: tuple[str, str] = ("coefficients.md", "predictions.md"),
                  draws: str | None = None) -> None:
    Path(coefficients).parent.mkdir(parents=True, exist_ok=True)
    out["coefficients"].to_csv(coefficients, index=False)
    if draws:
        Path(draws).parent.mkdir(parents=True, exist_ok=True)
        out["draws"].to_csv(draws, index=False)
    if predictions:
        Path(predictions).parent.mkdir(parents=True, exist_ok=True)
        out["predictions"].to_csv(predictions, index=False)
    if points:
        Path(points).parent.mkdir(parents=True, exist_ok=True)
        out["points"].to_csv(points, index=False)
    if markdown_dir:
        d = Path(markdown_dir)
        d.mkdir(parents=True, exist_ok=True)
        (d / markdown_names[0]).write_text(coefficients_markdown(out["coefficients"]))
        (d / markdown_names[1]).write_text(predictions_markdown(out["predictions"]))
