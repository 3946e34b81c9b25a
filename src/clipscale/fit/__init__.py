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

Modules, by role:

* ``settings``: the fit's settings, constants and output columns (FitSettings, FitError);
* ``methods``: the fitting methods on arrays: binning, the Pareto frontier, the power law, the
  saturating law;
* ``law``: one fitted law (``Fit``): its intervals and predictions; the saturating fit's diagnosis
  (AIC);
* ``intervals``: uncertainty without enough computes for a bootstrap: the t-interval of a least-squares
  line and its draws; each fit's own seeded generator;
* ``fitting``: fitting a results table: cells and seeds, the bootstrap, a fit per (source, dataset,
  metric, method);
* ``tables``: the fit's tables: coefficients, points, draws, predictions (data frames and markdown), and
  laws read back from them;
* ``steps``: the fit step: read a results table, fit it, write its outputs (``run``, ``run_step``,
  ``collect_step``);
"""

from clipscale.fit.fitting import cells_of, final_points, find_fit, fit_points, fit_table, paper_method
from clipscale.fit.intervals import t_draws, t_line
from clipscale.fit.law import Fit, aic_gain, diagnose_saturating
from clipscale.fit.methods import (SELECTORS, Selection, bin_edges, fit_arrays, pareto_mask, power_law, predict,
                                   saturating, select_all, select_binned, select_pareto)
from clipscale.fit.settings import (CELL_COLUMNS, COEFFICIENT_COLUMNS, DEFAULT_BIN_PAD, DEFAULT_PUBLISHED_PREDICTIONS,
                                    DIRECT_SOURCES, DRAW_COLUMNS, FitError, FitSettings, METHODS,
                                    MIN_BOOTSTRAP_COMPUTES, MIN_SATURATING_POINTS, PAPER_METHODS, POINT_COLUMNS,
                                    PREDICTION_COLUMNS, SATURATING_DEFAULTS, SAT_B_MAX, SAT_C_BOUNDS, T_METHODS)
from clipscale.fit.steps import collect_step, model_gmac_of, run, run_step, write_outputs
from clipscale.fit.tables import (coefficients_frame, coefficients_markdown, default_targets, draws_frame,
                                  laws_from_frames, paper_laws, points_frame, predictions_frame, predictions_markdown,
                                  resolve_targets, to_markdown)

__all__ = [
    "CELL_COLUMNS", "COEFFICIENT_COLUMNS", "DEFAULT_BIN_PAD", "DEFAULT_PUBLISHED_PREDICTIONS", "DIRECT_SOURCES",
    "DRAW_COLUMNS", "Fit", "FitError", "FitSettings", "METHODS", "MIN_BOOTSTRAP_COMPUTES", "MIN_SATURATING_POINTS",
    "PAPER_METHODS", "POINT_COLUMNS", "PREDICTION_COLUMNS", "SATURATING_DEFAULTS", "SAT_B_MAX", "SAT_C_BOUNDS",
    "SELECTORS", "Selection", "T_METHODS", "aic_gain", "bin_edges", "cells_of", "coefficients_frame",
    "coefficients_markdown", "collect_step", "default_targets", "diagnose_saturating", "draws_frame", "final_points",
    "find_fit", "fit_arrays", "fit_points", "fit_table", "laws_from_frames", "model_gmac_of", "paper_laws",
    "paper_method", "pareto_mask", "points_frame", "power_law", "predict", "predictions_frame",
    "predictions_markdown", "resolve_targets", "run", "run_step", "saturating", "select_all", "select_binned",
    "select_pareto", "t_draws", "t_line", "to_markdown", "write_outputs",
]
