"""Beyond the paper's fit: does a law extrapolate, which of two laws scales better, which run is
best in each compute bin. Every fit and interval comes from ``clipscale.fit``
(``fit_points``: the same methods, pairs bootstrap and seeded generators as the coefficient
tables); this module only holds runs out, pairs the bootstrap draws and tabulates.

Extrapolation check (``extrapolation``). For each (source, task, dataset, metric) of a results
table, runs at or above a compute cut are held out: by default those of the highest of the
paper's ``fit.bins`` equal-width bins of log10 C (``fit.extrapolation.holdout_bins``), or a fixed
cut per input (``fit.extrapolation.cut_gmac``). Each method of ``fit.extrapolation.methods``
is fitted, with its bootstrap, on the runs below the cut and predicts every held-out run:
predicted error, its bootstrap percentile interval, the prediction error in points of error
(100 (E_pred - E)) and whether the run lies inside the interval. The laws describe the best runs
(best per bin, Pareto frontier), so the summary per task and method is over the held-out runs on
the Pareto frontier of all the task's runs (``on_frontier``): mean absolute and mean signed
prediction error, and coverage (share inside the interval). The interval is that of the law (the
bootstrap band, or the t band on few computes: ``fit.fit_points``); ``inside_pi`` also checks the
prediction interval for one run (the law's uncertainty and one run's scatter). A list of
``holdout_bins`` back-tests at several cuts: ``coverage`` counts, per method and cut, the
held-out frontier runs inside the band and inside the prediction interval over all laws. Sources fitted directly on a few runs (OpenAI's
three) are not checked, and a saturating fit that is not identifiable (``fit.diagnose_saturating``)
predicts nothing: its row says why.

Comparison of two laws (``comparison``). Two sides, each the runs of a source optionally limited
to some training data or models (``fit.comparisons``; built in: OpenCLIP on LAION vs OpenAI CLIP
on WIT for the published input, our largest vs smallest data scale for ours), are fitted with
the same power-law method per (task, dataset, metric) both have. The two sides are independent
samples, so their bootstrap draws (each from its own seeded generator) are paired by index: the
i-th draw of a with the i-th of b. From the pairs: the ratio of exponents alpha_a / alpha_b
(> 1: a's error falls faster with compute) and the difference of predicted errors at target
computes, with percentile intervals; where the two lines cross, log10 C* = (log10 beta_b - log10
beta_a) / (alpha_a - alpha_b), with an interval, or "no crossing in range" when C* lies outside
[the smallest run of either side, the largest target compute].

Bin winners (``bin_winners``). Per task and source, the best (lowest-error) run of each of the
paper's equal-width compute bins (the runs the binned fit goes through), with its model, data and
samples seen, and whether it is on the Pareto frontier. A bin spans about half a decade of compute,
so its winner is mostly the run with the most compute in it: which of the runs made did best, not
which model and samples seen are optimal for a budget (that is ``clipscale.compute_optimal``).

Modules, by role:

* ``common``: what the analyses share: the group columns, the tolerance of "inside an interval", the fit
  settings, the groups of a table;
* ``extrapolation``: does a law extrapolate: fit below a held-out compute cut, check the runs above it
  (and coverage);
* ``comparison``: which of two laws scales better: slopes, their difference, the crossing, with
  bootstrap intervals;
* ``bins``: which runs win their compute bin (the points the binned fit goes through);
* ``plots``: the analyses' figures: extrapolation and comparison (in the figures' style);
* ``steps``: the pipeline's analysis steps: read a table, analyse, write the outputs (``input_table``,
  ``write_output``);
"""

from clipscale.analysis.bins import BIN_WINNER_COLUMNS, bin_winners, bin_winners_markdown
from clipscale.analysis.common import GROUP, INSIDE_TOL
from clipscale.analysis.comparison import (COMPARISON_COLUMNS, Side, compare, comparison, comparison_markdown,
                                           default_comparisons)
from clipscale.analysis.extrapolation import (COVERAGE_COLUMNS, EXTRAPOLATION_COLUMNS, SUMMARY_COLUMNS,
                                              coverage_by_cut, extrapolation, extrapolation_markdown, holdout_cut,
                                              holdout_list)
from clipscale.analysis.plots import (MAIN_TASKS, PUBLISHED_MAIN, data_ranges, draw_comparison, draw_extrapolation,
                                      gap_rows, main_panels)
from clipscale.analysis.steps import bin_winners_step, comparison_step, extrapolation_step, input_table, write_output

__all__ = [
    "BIN_WINNER_COLUMNS", "COMPARISON_COLUMNS", "COVERAGE_COLUMNS", "EXTRAPOLATION_COLUMNS", "GROUP", "INSIDE_TOL",
    "MAIN_TASKS", "PUBLISHED_MAIN", "SUMMARY_COLUMNS", "Side", "bin_winners", "bin_winners_markdown",
    "bin_winners_step", "compare", "comparison", "comparison_markdown", "comparison_step", "coverage_by_cut",
    "data_ranges", "default_comparisons", "draw_comparison", "draw_extrapolation", "extrapolation",
    "extrapolation_markdown", "extrapolation_step", "gap_rows", "holdout_cut", "holdout_list", "input_table",
    "main_panels", "write_output",
]
