"""One fitted law (``Fit``): its intervals and predictions; the saturating fit's diagnosis (AIC)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from clipscale.fit.methods import Selection, power_law, predict
from clipscale.fit.settings import SATURATING_DEFAULTS, SAT_B_MAX, SAT_C_BOUNDS


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
