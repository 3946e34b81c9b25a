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

Modules, by role:

* ``law``: the joint law of model size and data (``JointLaw``) and its fit (``fit_joint``), with its
  constants;
* ``allocation``: the compute-optimal allocation from a fitted law: the optimal size per budget, the
  optima with their intervals, our runs against them, optima at a bound;
* ``report``: the analysis of a results table and its outputs: the law's row, ``analyse``, the markdown,
  the pipeline's ``step``;
"""

from clipscale.compute_optimal.allocation import at_bounds, compare_runs, default_budgets, optima, optimal_size
from clipscale.compute_optimal.law import (A_BOUNDS, CELL, ComputeOptimalError, GRID, GROUP, JointFit, JointLaw,
                                           LAW_COLUMNS, MUENNIGHOFF_R_STAR, OPTIMUM_COLUMNS, PARAMS, RUN_COLUMNS,
                                           R_STAR_BOUNDS, SEARCH_DECADES, UNLIMITED, check_points, effective_data,
                                           fit_joint, repeats)
from clipscale.compute_optimal.report import analyse, law_row, markdown, step

__all__ = [
    "A_BOUNDS", "CELL", "ComputeOptimalError", "GRID", "GROUP", "JointFit", "JointLaw", "LAW_COLUMNS",
    "MUENNIGHOFF_R_STAR", "OPTIMUM_COLUMNS", "PARAMS", "RUN_COLUMNS", "R_STAR_BOUNDS", "SEARCH_DECADES", "UNLIMITED",
    "analyse", "at_bounds", "check_points", "compare_runs", "default_budgets", "effective_data", "fit_joint",
    "law_row", "markdown", "optima", "optimal_size", "repeats", "step",
]
