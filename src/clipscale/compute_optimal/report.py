"""The analysis of a results table and its outputs: the law's row, ``analyse``, the markdown, the pipeline's
``step``."""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping

import numpy as np
import pandas as pd

from clipscale.compute_optimal.allocation import at_bounds, compare_runs, default_budgets, optima
from clipscale.compute_optimal.law import (CELL, ComputeOptimalError, GROUP, JointFit, LAW_COLUMNS, OPTIMUM_COLUMNS,
                                           PARAMS, RUN_COLUMNS, _arrays, check_points, fit_joint, repeats)

log = logging.getLogger("clipscale.compute_optimal")


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
