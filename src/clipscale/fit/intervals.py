"""Uncertainty without enough computes for a bootstrap: the t-interval of a least-squares line and its draws;
each fit's own seeded generator."""

from __future__ import annotations

import math
import zlib
from typing import Mapping

import numpy as np

from clipscale.fit.methods import Selection, _line


def _seed(seed: int, key: Mapping) -> np.random.Generator:
    """The fit's own generator: (seed, crc32 of source|task|dataset|metric|), and of the key's
    ``subset`` too when it has one (a comparison side restricted to some data or models)."""
    text = "|".join(str(key[k]) for k in ("source", "task", "dataset", "metric")) + "|"
    if key.get("subset"):
        text += str(key["subset"])
    return np.random.default_rng([int(seed), zlib.crc32(text.encode())])


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
