"""Does a law extrapolate: fit below a held-out compute cut, check the runs above it (and coverage)."""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from clipscale import fit as fitting
from clipscale.analysis.common import INSIDE_TOL, _groups, _settings
from clipscale.analysis.comparison import _share

log = logging.getLogger("clipscale.analysis")


EXTRAPOLATION_COLUMNS = [
    "input", "source", "task", "dataset", "metric", "method", "cut_gmac", "n_train", "n_held",
    "model", "data", "samples_seen_label", "total_gmac", "error", "on_frontier",
    "predicted", "predicted_lo", "predicted_hi", "error_pts", "rel_error", "inside",
    "holdout_bins", "predicted_pi_lo", "predicted_pi_hi", "inside_pi",
]
SUMMARY_COLUMNS = [
    "input", "source", "task", "dataset", "metric", "method", "cut_gmac", "n_train", "n_held", "n_frontier",
    "mae_pts", "bias_pts", "max_abs_pts", "mean_rel_error", "coverage", "coverage_all", "formula",
    "bootstrap_valid", "ci", "note", "holdout_bins", "interval", "coverage_pi",
]

#: the back-test over cuts (fit.extrapolation.holdout_bins a list): per method and cut, over every
#: law of the input, how many held-out frontier runs fall inside the law's band and inside the
#: prediction interval for one run
COVERAGE_COLUMNS = [
    "input", "method", "holdout_bins", "laws", "n_frontier", "no_interval", "inside", "coverage", "inside_pi",
    "coverage_pi",
]


# ---------------------------------------------------------------------------------------------
# extrapolation


def holdout_cut(C: np.ndarray, bins: int, holdout_bins: int = 1, pad: float = fitting.DEFAULT_BIN_PAD,
                cut_gmac: float | None = None) -> float:
    """The compute at and above which runs are held out: ``cut_gmac``, or the lower edge of the
    ``holdout_bins``-th highest of ``bins`` equal-width bins of log10 C (the paper's bins)."""
    if cut_gmac:
        return float(cut_gmac)
    edges = fitting.bin_edges(np.log10(np.asarray(C, float)), bins, pad)
    k = min(max(int(holdout_bins), 1), bins - 1)
    return float(10.0 ** edges[bins - k])


def holdout_list(ex: Mapping) -> list[int]:
    """fit.extrapolation.holdout_bins as a list (an integer: one cut)."""
    value = ex.get("holdout_bins", 1)
    return [int(v) for v in (value if isinstance(value, (list, tuple)) else [value])]


def extrapolation(table: pd.DataFrame, input_name: str, fit_config: Mapping, seed: int = 0,
                  direct_sources: Sequence[str] = fitting.DIRECT_SOURCES) -> dict[str, object]:
    """The extrapolation check of a results table; returns {"runs", "summary", "coverage":
    frames, "fits": {(source, task, dataset, metric, method): (train Fit or None, cut)}} (fits
    of the first cut, for the figure). ``fit.extrapolation.holdout_bins`` a list: one check per
    cut (the back-test), ``coverage`` per method and cut over all laws."""
    st = _settings(fit_config)
    ex = dict(fit_config.get("extrapolation") or {})
    methods = list(ex.get("methods") or ["paper", "pareto", "saturating"])
    cut_fixed = (ex.get("cut_gmac") or {}).get(input_name)
    holdouts = [None] if cut_fixed else holdout_list(ex)
    rows, summary, fits = [], [], {}
    for (source, task, dataset, metric), points in _groups(table):
        key = {"input": input_name, "source": source, "task": task, "dataset": dataset, "metric": metric}
        where = f"{input_name}/{source}/{dataset}/{metric}"
        if source in direct_sources:
            log.info("extrapolation %s: not checked (the paper fits its %d runs directly)", where, len(points))
            continue
        C = points["total_gmac"].to_numpy(float)
        if len(np.unique(C)) < 3:  # a line below the cut needs two computes, the check a third
            log.info("extrapolation %s: not checked (%d distinct computes; 3 needed)", where, len(np.unique(C)))
            continue
        frontier = pd.Series(fitting.pareto_mask(C, points["error"].to_numpy(float)), index=points.index)
        for i, holdout in enumerate(holdouts):
            try:
                cut = holdout_cut(C, st["bins"], holdout or 1, st["pad"], cut_fixed)
            except fitting.FitError as e:
                log.info("extrapolation %s: no cut (%s)", where, e)
                break
            train, held = points[points["total_gmac"] < cut], points[points["total_gmac"] >= cut]
            base = dict(key, cut_gmac=cut, n_train=len(train), n_held=len(held))
            for m in methods:
                f, label, pred_rows, note = _check_one(train, held, frontier, source, m, key, st, fit_config,
                                                       seed, direct_sources, where, base, holdout)
                if i == 0:
                    fits[(source, task, dataset, metric, label)] = (f if f is not None and f.identifiable else None,
                                                                    cut)
                rows += pred_rows
                summary.append(_summary_row(base, label, pred_rows, f, note, holdout))
    runs = pd.DataFrame(rows, columns=EXTRAPOLATION_COLUMNS)
    return {"runs": runs, "summary": pd.DataFrame(summary, columns=SUMMARY_COLUMNS),
            "coverage": coverage_by_cut(runs), "fits": fits}


def _check_one(train, held, frontier, source, m, key, st, fit_config, seed, direct_sources, where, base,
               holdout):
    """One law fitted below a cut and its predictions of the held-out runs."""
    method = fitting.paper_method(source, train["total_gmac"].nunique(), st["bins"], direct_sources) \
        if m == "paper" else m
    label = f"paper ({method})" if m == "paper" else method
    note, f = "", None
    if held.empty:
        note = "no run at or above the cut"
    else:
        try:
            f = fitting.fit_points(train, method, key, bins=st["bins"], bootstrap=st["bootstrap"],
                                   ci=st["ci"], seed=seed, pad=st["pad"],
                                   saturating_options=fitting.FitSettings.of(fit_config).saturating,
                                   min_bootstrap_computes=st["min_bootstrap_computes"])
        except fitting.FitError as e:
            note = f"no fit below the cut: {e}"
        else:
            if not f.identifiable:
                note = f"not identifiable below the cut: {f.note}"
    if note:
        log.info("extrapolation %s, %s: %s", where, label, note)
    pred_rows = []
    if f is not None and f.identifiable:
        Ch = held["total_gmac"].to_numpy(float)
        est = f.predict(Ch)
        lo, hi = f.interval(Ch)
        plo, phi = f.prediction_interval(Ch)
        for (_, run), e, lo_, hi_, plo_, phi_ in zip(held.iterrows(), est, lo, hi, plo, phi):
            E = float(run["error"])
            inside = (bool(lo_ * (1 - INSIDE_TOL) <= E <= hi_ * (1 + INSIDE_TOL))
                      if np.isfinite(lo_) else None)
            inside_pi = (bool(plo_ * (1 - INSIDE_TOL) <= E <= phi_ * (1 + INSIDE_TOL))
                         if np.isfinite(plo_) else None)
            pred_rows.append(dict(base, method=label, model=run["model"], data=run["data"],
                                  samples_seen_label=run["samples_seen_label"],
                                  total_gmac=float(run["total_gmac"]), error=E,
                                  on_frontier=bool(frontier[run.name]), predicted=float(e),
                                  predicted_lo=float(lo_), predicted_hi=float(hi_),
                                  error_pts=100 * (float(e) - E), rel_error=float(e) / E - 1,
                                  inside=inside, holdout_bins=holdout, predicted_pi_lo=float(plo_),
                                  predicted_pi_hi=float(phi_), inside_pi=inside_pi))
    return f, label, pred_rows, note


def _summary_row(base: dict, method: str, pred_rows: list[dict], f, note: str, holdout: int | None = None) -> dict:
    front = [r for r in pred_rows if r["on_frontier"]]
    pts = np.array([r["error_pts"] for r in front])
    rel = np.array([r["rel_error"] for r in front])

    def coverage(rows, col="inside"):
        flags = [r[col] for r in rows if r[col] is not None]
        return float(np.mean(flags)) if flags else math.nan

    nan = math.nan
    return dict(base, method=method, n_frontier=len(front),
                mae_pts=float(np.mean(np.abs(pts))) if len(pts) else nan,
                bias_pts=float(np.mean(pts)) if len(pts) else nan,
                max_abs_pts=float(np.max(np.abs(pts))) if len(pts) else nan,
                mean_rel_error=float(np.mean(rel)) if len(rel) else nan,
                coverage=coverage(front), coverage_all=coverage(pred_rows),
                formula=f.formula() if f is not None and f.identifiable else "",
                bootstrap_valid=len(f.draws) if f is not None else 0, ci=f.ci if f is not None else nan,
                note=note, holdout_bins=holdout, interval=f.interval_method if f is not None else "",
                coverage_pi=coverage(front, "inside_pi"))


def coverage_by_cut(runs: pd.DataFrame) -> pd.DataFrame:
    """The back-test: per method and cut, over every law checked, the held-out frontier runs
    inside the law's band and inside the prediction interval (counts and shares over the runs
    whose law has an interval; ``no_interval``: those whose law has none, e.g. a line through 2
    points)."""
    rows = []
    front = runs[runs["on_frontier"].astype(bool)] if len(runs) else runs
    if front.empty:
        return pd.DataFrame(rows, columns=COVERAGE_COLUMNS)
    front = front.assign(holdout_bins=front["holdout_bins"].fillna(0).astype(int))
    for (method, holdout), g in front.groupby(["method", "holdout_bins"], sort=True):
        band = g["inside"].dropna().astype(bool)
        pi = g["inside_pi"].dropna().astype(bool)
        laws = g.drop_duplicates(["source", "task", "dataset", "metric"])
        rows.append({"input": g["input"].iloc[0], "method": method, "holdout_bins": holdout or None,
                     "laws": len(laws), "n_frontier": len(band), "no_interval": len(g) - len(band),
                     "inside": int(band.sum()), "coverage": float(band.mean()) if len(band) else math.nan,
                     "inside_pi": int(pi.sum()), "coverage_pi": float(pi.mean()) if len(pi) else math.nan})
    return pd.DataFrame(rows, columns=COVERAGE_COLUMNS)


def extrapolation_markdown(summary: pd.DataFrame, coverage: pd.DataFrame | None = None) -> str:
    if summary.empty:
        return "_no extrapolation check (no source with runs on both sides of the cut)_\n"
    level = summary["ci"].dropna()
    level = f"{level.iloc[0]:.0%}" if len(level) else "bootstrap"
    out = pd.DataFrame({
        "source": summary["source"], "dataset": summary["dataset"], "metric": summary["metric"],
        "method": summary["method"], "cut (GMAC)": [f"{v:.3g}" for v in summary["cut_gmac"]],
        "fit on": summary["n_train"], "held out": summary["n_held"], "on frontier": summary["n_frontier"],
        "MAE (pts)": summary["mae_pts"], "bias (pts)": summary["bias_pts"],
        "inside interval": [_share(c, n) for c, n in zip(summary["coverage"], summary["n_frontier"])],
        "inside PI": [_share(c, n) for c, n in zip(summary.get("coverage_pi", pd.Series(math.nan, index=summary.index)),
                                                   summary["n_frontier"])],
        "law below the cut": [f or n for f, n in zip(summary["formula"].fillna(""), summary["note"].fillna(""))],
    })
    if "interval" in summary:
        out.insert(4, "interval", summary["interval"].fillna(""))
    head = ("Extrapolation check: each law fitted on the runs below the cut predicts the held-out runs "
            f"above it. Errors in points of error (100·(E_pred − E)) over the held-out runs on the Pareto "
            f"frontier; bias > 0: the law predicted too high an error; inside interval: share within the "
            f"law's {level} band (bootstrap, or t on few computes); inside PI: within the {level} prediction "
            f"interval for one run.\n\n")
    text = head + fitting.to_markdown(out, floatfmt=".2f")
    if coverage is not None and len(coverage):
        cov = pd.DataFrame({
            "method": coverage["method"],
            "held out": [f"highest {int(h)} bin(s)" if pd.notna(h) else "fixed cut" for h in coverage["holdout_bins"]],
            "laws": coverage["laws"], "frontier runs held out": coverage["n_frontier"],
            "(law without interval)": coverage["no_interval"],
            "inside band": [_share(c, n) for c, n in zip(coverage["coverage"], coverage["n_frontier"])],
            "coverage": coverage["coverage"],
            "inside PI": [_share(c, n) for c, n in zip(coverage["coverage_pi"], coverage["n_frontier"])],
            "coverage PI": coverage["coverage_pi"],
        })
        text += (f"\nCoverage by cut (back-test over every law above; nominal {level}):\n\n"
                 + fitting.to_markdown(cov, floatfmt=".2f"))
    return text
