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
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from clipscale import fit as fitting

log = logging.getLogger(__name__)

GROUP = ["source", "task", "dataset", "metric"]
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
COMPARISON_COLUMNS = [
    "comparison", "input", "a", "b", "task", "dataset", "metric", "method_a", "method_b", "n_a", "n_b",
    "alpha_a", "alpha_a_lo", "alpha_a_hi", "alpha_b", "alpha_b_lo", "alpha_b_hi",
    "alpha_ratio", "alpha_ratio_lo", "alpha_ratio_hi", "alpha_diff", "alpha_diff_lo", "alpha_diff_hi",
    "steeper", "steeper_decided", "crossing_gmac", "crossing_lo", "crossing_hi", "crossing_share",
    "crossing_in_range", "range_lo", "range_hi", "crossing", "compute_gmac", "error_a", "error_b",
    "delta_error", "delta_error_lo", "delta_error_hi", "better", "better_decided", "pairs", "ci",
]
BIN_WINNER_COLUMNS = [
    "input", "source", "task", "dataset", "metric", "bin", "bin_lo_gmac", "bin_hi_gmac", "n_in_bin",
    "model", "data", "samples_seen_label", "total_gmac", "error", "on_pareto",
]
INSIDE_TOL = 1e-9  # relative slack of "inside the interval" (a noise-free law has a zero-width band)


def _settings(fit_config: Mapping) -> dict:
    st = fitting.FitSettings.of(fit_config)
    return {"bins": st.bins, "bootstrap": st.bootstrap, "ci": st.ci, "pad": st.bin_pad,
            "min_bootstrap_computes": st.min_bootstrap_computes}


def _groups(df: pd.DataFrame):
    yield from fitting.final_points(df).groupby(GROUP, sort=True)


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


def _share(coverage: float, n: int) -> str:
    if n == 0 or math.isnan(coverage):
        return ""
    return f"{round(coverage * n):d}/{n}"


# ---------------------------------------------------------------------------------------------
# comparison of two laws


@dataclass
class Side:
    source: str
    label: str
    data: list[str] | None = None
    models: list[str] | None = None

    @classmethod
    def of(cls, spec: Mapping) -> Side:
        from clipscale.figures import SOURCE_LABELS

        label = spec.get("label") or SOURCE_LABELS.get(spec["source"], spec["source"])
        if not spec.get("label") and (spec.get("data") or spec.get("models")):
            label += " (" + ", ".join(list(spec.get("data") or []) + list(spec.get("models") or [])) + ")"
        return cls(spec["source"], label, list(spec["data"]) if spec.get("data") else None,
                   list(spec["models"]) if spec.get("models") else None)

    @property
    def subset(self) -> str:
        parts = []
        if self.data:
            parts.append("data=" + ",".join(self.data))
        if self.models:
            parts.append("models=" + ",".join(self.models))
        return ";".join(parts)

    def select(self, df: pd.DataFrame) -> pd.DataFrame:
        keep = df["source"] == self.source
        if self.data:
            keep &= df["data"].isin(self.data)
        if self.models:
            keep &= df["model"].isin(self.models) | df["arch_id"].isin(self.models)
        return df[keep]


def default_comparisons(table: pd.DataFrame, input_name: str) -> list[dict]:
    """Built-in pairs: OpenCLIP (LAION) vs OpenAI CLIP (WIT) for the published input; for ours,
    the cosine vs the const-cooldown runs when both schedules ran, else our largest vs smallest
    data scale (by data_size)."""
    sources = set(table["source"])
    if input_name == "published":
        if {"published", "openai"} <= sources:
            return [{"name": "openclip_vs_openai", "input": "published", "a": {"source": "published"},
                     "b": {"source": "openai"}, "method": "paper"}]
        return []
    if {"ours", "ours-cooldown"} <= sources:  # the two schedules of grid.schedules
        return [{"name": "cosine_vs_cooldown", "input": "ours", "a": {"source": "ours"},
                 "b": {"source": "ours-cooldown"}, "method": "paper"}]
    ours = fitting.final_points(table[table["source"] == "ours"])
    if ours.empty:
        return []
    sizes = ours.groupby("data")["data_size"].first() if "data_size" in ours else pd.Series(dtype=float)
    sizes = sizes.dropna().sort_values()
    if len(sizes) < 2:
        return []
    big, small = str(sizes.index[-1]), str(sizes.index[0])
    return [{"name": f"data_{big}_vs_{small}", "input": "ours", "a": {"source": "ours", "data": [big]},
             "b": {"source": "ours", "data": [small]}, "method": "paper"}]


def _paired(fa: fitting.Fit, fb: fitting.Fit, fn) -> np.ndarray:
    n = min(len(fa.draws), len(fb.draws))
    return np.array([fn(fa.draws[i], fb.draws[i]) for i in range(n)], dtype=float)


def _pct(values: np.ndarray, ci: float) -> tuple[float, float]:
    values = values[np.isfinite(values)]
    if len(values) < 2:
        return math.nan, math.nan
    q = (1 - ci) / 2
    return float(np.quantile(values, q)), float(np.quantile(values, 1 - q))


def _p10(x: float) -> float:
    """10^x without overflow (nearly parallel lines cross at absurd computes)."""
    if not np.isfinite(x):
        return math.nan
    return math.inf if x > 300 else (0.0 if x < -300 else 10.0 ** x)


def _log_crossing(pa: Mapping, pb: Mapping) -> float:
    """log10 C where beta_a C^alpha_a = beta_b C^alpha_b (nan for parallel lines)."""
    da = pa["alpha"] - pb["alpha"]
    if da == 0:
        return math.nan
    return (math.log10(pb["beta"]) - math.log10(pa["beta"])) / da


def compare(fa: fitting.Fit, fb: fitting.Fit, computes: Sequence[float], c_range: tuple[float, float]) -> list[dict]:
    """Rows of the comparison of two power-law fits (one per target compute)."""
    ci = fa.ci
    a_lo, a_hi = fa.param_interval("alpha")
    b_lo, b_hi = fb.param_interval("alpha")
    d_lo, d_hi = _pct(_paired(fa, fb, lambda a, b: a["alpha"] - b["alpha"]), ci)
    # the ratio of the fitted exponents (the paper's number) always; its interval only where both
    # errors surely fall (both intervals below 0): near 0 a resampled ratio runs to +-inf. Which
    # law is steeper is read from the difference.
    ratio = fa.params["alpha"] / fb.params["alpha"] if fb.params["alpha"] != 0 else math.nan
    if a_hi < 0 and b_hi < 0:
        r_lo, r_hi = _pct(_paired(fa, fb, lambda a, b: a["alpha"] / b["alpha"]), ci)
    else:
        r_lo = r_hi = math.nan
    steeper = "a" if fa.params["alpha"] < fb.params["alpha"] else "b"
    decided = bool((d_lo > 0) or (d_hi < 0)) if not math.isnan(d_lo) else False
    x = _log_crossing(fa.params, fb.params)
    xs = _paired(fa, fb, _log_crossing)
    x_lo, x_hi = _pct(xs, ci)
    lo, hi = math.log10(c_range[0]), math.log10(c_range[1])
    in_range = bool(np.isfinite(x) and lo <= x <= hi)
    share = float(np.mean((xs >= lo) & (xs <= hi))) if len(xs) else math.nan
    if in_range:
        text = f"{_p10(x):.3g} GMAC" + (f" [{_p10(x_lo):.3g}, {_p10(x_hi):.3g}]" if np.isfinite(x_lo) else "")
    else:
        text = f"no crossing in range [{c_range[0]:.3g}, {c_range[1]:.3g}] GMAC"
    head = {"method_a": fa.method, "method_b": fb.method, "n_a": len(fa.points), "n_b": len(fb.points),
            "alpha_a": fa.params["alpha"], "alpha_a_lo": a_lo, "alpha_a_hi": a_hi,
            "alpha_b": fb.params["alpha"], "alpha_b_lo": b_lo, "alpha_b_hi": b_hi,
            "alpha_ratio": ratio, "alpha_ratio_lo": r_lo, "alpha_ratio_hi": r_hi,
            "alpha_diff": fa.params["alpha"] - fb.params["alpha"], "alpha_diff_lo": d_lo, "alpha_diff_hi": d_hi,
            "steeper": steeper, "steeper_decided": decided, "crossing_gmac": _p10(x), "crossing_lo": _p10(x_lo),
            "crossing_hi": _p10(x_hi), "crossing_share": share, "crossing_in_range": in_range,
            "range_lo": c_range[0], "range_hi": c_range[1], "crossing": text,
            "pairs": min(len(fa.draws), len(fb.draws)), "ci": ci}
    rows = []
    for C in computes:
        ea, eb = float(fa.predict(C)), float(fb.predict(C))
        gaps = _paired(fa, fb, lambda a, b, C=C: float(fitting.predict(a, C) - fitting.predict(b, C)))
        dlo, dhi = _pct(gaps, ci)
        better = "a" if ea < eb else "b"
        rows.append(dict(head, compute_gmac=float(C), error_a=ea, error_b=eb, delta_error=ea - eb,
                         delta_error_lo=dlo, delta_error_hi=dhi, better=better,
                         better_decided=bool(dlo > 0 or dhi < 0) if not math.isnan(dlo) else False))
    return rows


def comparison(table: pd.DataFrame, input_name: str, fit_config: Mapping, seed: int = 0,
               comparisons: Iterable[Mapping] | None = None) -> pd.DataFrame:
    """Compare the configured pairs of laws (``comparisons``: fit.comparisons entries of this input,
    None for the built-in pairs) on a results table."""
    st = _settings(fit_config)
    if comparisons is None:
        comparisons = default_comparisons(table, input_name)
    df = fitting.final_points(table)
    rows = []
    for spec in comparisons:
        if spec.get("input", input_name) != input_name:
            continue
        a, b = Side.of(spec["a"]), Side.of(spec["b"])
        method = spec.get("method", "paper")
        da, db = a.select(df), b.select(df)
        if spec.get("datasets"):
            da, db = da[da["dataset"].isin(spec["datasets"])], db[db["dataset"].isin(spec["datasets"])]
        if spec.get("metrics"):
            da, db = da[da["metric"].isin(spec["metrics"])], db[db["metric"].isin(spec["metrics"])]
        if da.empty or db.empty:
            log.warning("comparison %s: no final runs for %s", spec["name"], a.label if da.empty else b.label)
            continue
        common = sorted(set(map(tuple, da[GROUP[1:]].drop_duplicates().to_numpy()))
                        & set(map(tuple, db[GROUP[1:]].drop_duplicates().to_numpy())))
        if spec.get("computes"):
            computes = sorted(float(c) for c in spec["computes"])
        else:
            top = float(max(da["total_gmac"].max(), db["total_gmac"].max()))
            computes = [top, 10 * top, 100 * top]
        c_range = (float(min(da["total_gmac"].min(), db["total_gmac"].min())),
                   float(max(computes + [da["total_gmac"].max(), db["total_gmac"].max()])))
        for task, dataset, metric in common:
            side_fits = []
            for side, pts in ((a, da), (b, db)):
                pts = pts[(pts["task"] == task) & (pts["dataset"] == dataset) & (pts["metric"] == metric)]
                m = fitting.paper_method(side.source, pts["total_gmac"].nunique(), st["bins"]) \
                    if method == "paper" else method
                key = {"input": input_name, "source": side.source, "task": task, "dataset": dataset,
                       "metric": metric, "subset": side.subset}
                try:
                    side_fits.append(fitting.fit_points(pts, m, key, bins=st["bins"], bootstrap=st["bootstrap"],
                                                        ci=st["ci"], seed=seed, pad=st["pad"],
                                                        min_bootstrap_computes=st["min_bootstrap_computes"]))
                except fitting.FitError as e:
                    log.info("comparison %s, %s/%s: no %s fit of %s (%s)", spec["name"], dataset, metric, m,
                             side.label, e)
                    break
            if len(side_fits) < 2:
                continue
            for row in compare(side_fits[0], side_fits[1], computes, c_range):
                rows.append(dict(row, comparison=spec["name"], input=input_name, a=a.label, b=b.label,
                                 task=task, dataset=dataset, metric=metric))
            r = rows[-1]
            log.info("comparison %s, %s/%s: alpha %s %.3f vs %s %.3f, ratio %.2f [%.2f, %.2f]; crossing: %s",
                     spec["name"], dataset, metric, a.label, r["alpha_a"], b.label, r["alpha_b"], r["alpha_ratio"],
                     r["alpha_ratio_lo"], r["alpha_ratio_hi"], r["crossing"])
    return pd.DataFrame(rows, columns=COMPARISON_COLUMNS)


def _ci(v: float, lo: float, hi: float, fmt: str) -> str:
    if math.isnan(v):
        return ""
    if math.isnan(lo):
        return format(v, fmt)
    return f"{format(v, fmt)} [{format(lo, fmt)}, {format(hi, fmt)}]"


def comparison_markdown(comp: pd.DataFrame) -> str:
    if comp.empty:
        return "_no comparison (no configured pair has runs on both sides)_\n"
    parts = []
    for name, c in comp.groupby("comparison", sort=False):
        a, b, level = c["a"].iloc[0], c["b"].iloc[0], c["ci"].iloc[0]
        first = c.drop_duplicates(GROUP[1:])
        out = pd.DataFrame({
            "dataset": first["dataset"], "metric": first["metric"],
            "α a": [_ci(*v, ".3f") for v in zip(first["alpha_a"], first["alpha_a_lo"], first["alpha_a_hi"])],
            "α b": [_ci(*v, ".3f") for v in zip(first["alpha_b"], first["alpha_b_lo"], first["alpha_b_hi"])],
            "α a / α b": [_ci(v, lo, hi, ".2f") + ("" if not math.isnan(v) and not math.isnan(lo) else
                                                    (" " if not math.isnan(v) else "") + "(no interval: an α interval reaches 0)")
                          for v, lo, hi in zip(first["alpha_ratio"], first["alpha_ratio_lo"], first["alpha_ratio_hi"])],
            "steeper": [(a if s == "a" else b) + ("" if d else " (undecided: α a − α b's interval spans 0)")
                        for s, d in zip(first["steeper"], first["steeper_decided"])],
            "crossing": first["crossing"].to_numpy(),
        })
        out = out.reset_index(drop=True)
        for C in sorted(c["compute_gmac"].unique()):
            at = c[c["compute_gmac"] == C].drop_duplicates(GROUP[1:]).reset_index(drop=True)
            out[f"ΔE at {C:.3g} (pts)"] = [_ci(100 * v, 100 * lo, 100 * hi, ".2f") for v, lo, hi in
                                           zip(at["delta_error"], at["delta_error_lo"], at["delta_error_hi"])]
        parts.append(
            f"### {name}: a = {a}, b = {b}\n\nExponents α of E = β·C^α (C in GMAC) with {level:.0%} bootstrap "
            f"intervals (paired draws); α a / α b > 1: a's error falls faster. ΔE = E_a − E_b in points of "
            f"error at the given computes (< 0: a better).\n\n" + fitting.to_markdown(out))
    return "\n".join(parts)


# ---------------------------------------------------------------------------------------------
# bin winners


def bin_winners(table: pd.DataFrame, input_name: str, fit_config: Mapping) -> pd.DataFrame:
    """The best run per compute bin (the paper's bins), for every source and task."""
    st = _settings(fit_config)
    rows = []
    for (source, task, dataset, metric), points in _groups(table):
        points = points.sort_values(["total_gmac", "error"], kind="mergesort").reset_index(drop=True)
        C, E = points["total_gmac"].to_numpy(float), points["error"].to_numpy(float)
        try:
            sel = fitting.select_binned(C, E, bins=st["bins"], pad=st["pad"])
            edges = fitting.bin_edges(np.log10(C), st["bins"], st["pad"])
        except fitting.FitError as e:
            log.info("bin winners %s/%s/%s: %s", source, dataset, metric, e)
            continue
        pareto = fitting.pareto_mask(C, E)
        for i, b, n in zip(sel.index, sel.bin, sel.n_in_bin):
            run = points.iloc[int(i)]
            rows.append({"input": input_name, "source": source, "task": task, "dataset": dataset, "metric": metric,
                         "bin": int(b), "bin_lo_gmac": float(10 ** edges[b - 1]), "bin_hi_gmac": float(10 ** edges[b]),
                         "n_in_bin": int(n), "model": run["model"], "data": run["data"],
                         "samples_seen_label": run["samples_seen_label"], "total_gmac": float(run["total_gmac"]),
                         "error": float(run["error"]), "on_pareto": bool(pareto[int(i)])})
    return pd.DataFrame(rows, columns=BIN_WINNER_COLUMNS)


def bin_winners_markdown(front: pd.DataFrame) -> str:
    if front.empty:
        return "_no bin winners_\n"
    out = pd.DataFrame({
        "source": front["source"], "dataset": front["dataset"], "metric": front["metric"], "bin": front["bin"],
        "compute bin (GMAC)": [f"{lo:.3g} – {hi:.3g}" for lo, hi in zip(front["bin_lo_gmac"], front["bin_hi_gmac"])],
        "runs": front["n_in_bin"], "best model": front["model"], "data": front["data"],
        "samples seen": front["samples_seen_label"], "compute (GMAC)": [f"{v:.3g}" for v in front["total_gmac"]],
        "error %": 100 * front["error"], "Pareto": front["on_pareto"],
    })
    return ("Bin winners: the best run of each equal-width bin of log10 C (the paper's bins), per source and "
            "task: the runs the binned fit goes through, not an optimal allocation (see compute_optimal)\n\n" + fitting.to_markdown(out, floatfmt=".2f"))


# ---------------------------------------------------------------------------------------------
# figures


#: the paper's main tasks (Tables 16, 19-24: zero-shot classification on ImageNet, its robustness
#: sets and VTAB+, zero-shot retrieval on MS-COCO and Flickr30k): the published extrapolation figure
PUBLISHED_MAIN = ("imagenet1k/acc1", "imagenet_robustness/acc1", "vtab+/acc1",
                  "mscoco_captions/image_retrieval_recall@5", "mscoco_captions/text_retrieval_recall@5",
                  "flickr30k/image_retrieval_recall@5", "flickr30k/text_retrieval_recall@5")
MAIN_TASKS = ("zeroshot_classification", "zeroshot_retrieval")


def main_panels(groups: Iterable[tuple], input_name: str, settings: Mapping) -> list[tuple]:
    """The (source, task, dataset, metric) groups the extrapolation figure draws (the rest only in
    its table): fit.extrapolation.figure_datasets ("dataset" or "dataset/metric") when given; else
    the paper's main tasks for the published input (``PUBLISHED_MAIN``) and, for ours, zero-shot
    classification (top-1) and retrieval on each set that is not averaged into a group's mean (the
    mean is drawn instead)."""
    from clipscale.table import groups_of

    groups = list(groups)
    wanted = ((settings.get("fit") or {}).get("extrapolation") or {}).get("figure_datasets")
    if wanted:
        return [g for g in groups if g[2] in wanted or f"{g[2]}/{g[3]}" in wanted]
    if input_name == "published":
        return [g for g in groups if f"{g[2]}/{g[3]}" in PUBLISHED_MAIN]
    averaged = {m for members in groups_of(settings).values() if len(set(members)) > 1 for m in members}
    return [g for g in groups if g[1] in MAIN_TASKS and g[2] not in averaged
            and (g[1] != "zeroshot_classification" or g[3] == "acc1")]


def draw_extrapolation(table: pd.DataFrame, result: Mapping, title: str | None = None,
                       panels: Sequence[tuple] | None = None):
    """One panel per checked task of ``panels`` ((source, task, dataset, metric); None: all): the
    runs below the cut (grey), held out (black: on the frontier, hollow: not), each identifiable
    law fitted below the cut with its band. One legend below the panels; titles wrapped to the
    panel's width, the figure's title above them."""
    import textwrap

    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    from clipscale.figures.style import (
        LABEL_FONTSIZE,
        TITLE_FONTSIZE,
        _log_error_axis,
        dataset_label,
        error_label,
        metric_label,
    )

    fits = result["fits"]
    groups = sorted({k[:4] for k in fits})
    if panels is not None:
        groups = [g for g in groups if tuple(g) in {tuple(p) for p in panels}]
    if not groups:
        fig, ax = plt.subplots(figsize=(6, 2))
        ax.axis("off")
        ax.text(0.5, 0.5, "no extrapolation check: no source with runs on both sides of the cut",
                ha="center", va="center")
        return fig
    n_cols = min(len(groups), 4)
    n_rows = math.ceil(len(groups) / n_cols)
    fig, axes = plt.subplots(n_rows, n_cols, figsize=(4.6 * n_cols, 3.9 * n_rows + 1.2), squeeze=False)
    colors = plt.get_cmap("tab10")
    df = fitting.final_points(table)
    methods = sorted({k[4] for k, v in fits.items() if k[:4] in set(groups) and v[0] is not None})
    several_sources = len({g[0] for g in groups}) > 1
    for i, (source, task, dataset, metric) in enumerate(groups):
        ax = axes[i // n_cols][i % n_cols]
        pts = df[(df["source"] == source) & (df["task"] == task) & (df["dataset"] == dataset) & (df["metric"] == metric)]
        C, E = pts["total_gmac"].to_numpy(float), pts["error"].to_numpy(float)
        cut = next(v[1] for k, v in fits.items() if k[:4] == (source, task, dataset, metric))
        front = fitting.pareto_mask(C, E)
        below = C < cut
        ax.scatter(C[below], 100 * E[below], color="0.6", s=18, zorder=3)
        ax.scatter(C[~below & front], 100 * E[~below & front], color="black", s=26, zorder=4)
        ax.scatter(C[~below & ~front], 100 * E[~below & ~front], facecolors="none", edgecolors="black", s=22,
                   zorder=4)
        xs = np.logspace(math.log10(C.min()), math.log10(C.max()) + 0.05, 150)
        shown = [100 * E]
        for j, m in enumerate(methods):
            f = fits.get((source, task, dataset, metric, m), (None, cut))[0]
            if f is None:
                continue
            ax.plot(xs, 100 * f.predict(xs), color=colors(j), lw=1.6)
            shown.append(np.clip(100 * f.predict(xs), None, 100.0))
            if len(f.draws) >= 2:
                lo, hi = f.interval(xs)
                ax.fill_between(xs, 100 * lo, 100 * hi, color=colors(j), alpha=0.12, lw=0)
        ax.axvline(cut, color="0.3", ls=":", lw=1)
        ax.set_xscale("log")
        _log_error_axis(ax, np.concatenate(shown))
        ax.set_xlabel("Total compute C (GMAC)", fontsize=LABEL_FONTSIZE - 1)
        ax.set_ylabel(error_label(metric), fontsize=LABEL_FONTSIZE - 1)
        name = f"{dataset_label(dataset, source != 'published' and source != 'openai')}, {metric_label(metric)}"
        ax.set_title(textwrap.fill((f"{source}: " if several_sources else "") + name, 40),
                     fontsize=TITLE_FONTSIZE - 2)
        ax.grid(True, which="major", alpha=0.3)
    for j in range(len(groups), n_rows * n_cols):
        axes[j // n_cols][j % n_cols].set_visible(False)
    handles = [Line2D([], [], color="0.6", marker="o", ls="", label="fitted on (below the cut)"),
               Line2D([], [], color="black", marker="o", ls="", label="held out, on the Pareto frontier"),
               Line2D([], [], color="black", marker="o", mfc="none", ls="", label="held out"),
               Line2D([], [], color="0.3", ls=":", label="cut")]
    handles += [Line2D([], [], color=colors(j), lw=1.6, label=m) for j, m in enumerate(methods)]
    fig.legend(handles=handles, loc="lower center", ncol=min(len(handles), 4), fontsize=8, frameon=False)
    legend_h = 0.45 * math.ceil(len(handles) / 4) / fig.get_size_inches()[1]
    top = 1.0
    if title:
        fig.suptitle(title, fontsize=TITLE_FONTSIZE + 1)
        top = 1.0 - 0.5 / fig.get_size_inches()[1]
    fig.tight_layout(rect=(0, legend_h, 1, top))
    return fig


def data_ranges(table: pd.DataFrame, input_name: str, comparisons: Iterable[Mapping] | None = None
                ) -> dict[str, tuple[float, float]]:
    """Per comparison (fit.comparisons entries of this input, None: the built-in pairs), the
    smallest and largest compute of the final runs of its two sides (the data the laws rest on)."""
    if comparisons is None:
        comparisons = default_comparisons(table, input_name)
    df = fitting.final_points(table)
    out = {}
    for spec in comparisons:
        if spec.get("input", input_name) != input_name:
            continue
        sides = pd.concat([Side.of(spec["a"]).select(df), Side.of(spec["b"]).select(df)])
        if spec.get("datasets"):
            sides = sides[sides["dataset"].isin(spec["datasets"])]
        if spec.get("metrics"):
            sides = sides[sides["metric"].isin(spec["metrics"])]
        if not sides.empty:
            out[spec["name"]] = (float(sides["total_gmac"].min()), float(sides["total_gmac"].max()))
    return out


def gap_rows(comp: pd.DataFrame, ranges: Mapping[str, tuple[float, float]] | None = None,
             within: float | None = 10.0) -> pd.DataFrame:
    """The gap the forest plot shows per comparison and task: at the largest target compute within
    ``within`` x the data's compute range (``ranges``: ``data_ranges``), or at the largest target
    compute when ``within`` is None; a comparison with no target compute in range keeps its row
    with no gap (delta_error nan)."""
    rows = []
    for _, g in comp.groupby(["comparison"] + GROUP[1:], sort=False):
        g = g.sort_values("compute_gmac")
        name = g["comparison"].iloc[0]
        if within is not None and ranges and name in ranges:
            lo, hi = ranges[name]
            inside = g[(g["compute_gmac"] >= lo / within) & (g["compute_gmac"] <= hi * within)]
            if inside.empty:
                row = g.iloc[-1].copy()
                for col in ("delta_error", "delta_error_lo", "delta_error_hi", "compute_gmac"):
                    row[col] = math.nan
                rows.append(row)
                continue
            g = inside
        rows.append(g.iloc[-1])
    return pd.DataFrame(rows).reset_index(drop=True)


def draw_comparison(comp: pd.DataFrame, title: str | None = None,
                    ranges: Mapping[str, tuple[float, float]] | None = None, within: float | None = 10.0):
    """Forest plot: per comparison and task, the difference of exponents and the difference of
    predicted errors with their intervals, the gap at the largest target compute within ``within``
    x the data's compute range (``ranges``; None: the largest target compute), that compute stated
    beside each gap on the right-hand axis."""
    import matplotlib.pyplot as plt

    from clipscale.figures import TITLE_FONTSIZE, dataset_label, metric_label

    if comp.empty:
        fig, ax = plt.subplots(figsize=(6, 2))
        ax.axis("off")
        ax.text(0.5, 0.5, "no comparison: no configured pair has runs on both sides", ha="center", va="center")
        return fig
    last = gap_rows(comp, ranges, within)
    last = last.iloc[::-1].reset_index(drop=True)
    labels = [f"{r.comparison}: {dataset_label(r.dataset, r.input == 'ours')}, {metric_label(r.metric)}"
              for r in last.itertuples()]
    at = []
    for r in last.itertuples():
        text = f"at {r.compute_gmac:.2g} GMAC" if np.isfinite(r.compute_gmac) else "no target compute"
        if ranges and r.comparison in ranges:
            hi = ranges[r.comparison][1]
            text += (f" ({r.compute_gmac / hi:.3g}× the largest run)" if np.isfinite(r.compute_gmac)
                     else f" within {within:g}× of the runs")
        at.append(text)
    y = np.arange(len(last))
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(13.5, 0.42 * len(last) + 2.0))
    scope = (f"the largest target compute within {within:g}× of the runs' compute" if within is not None and ranges
             else "the largest target compute")
    for ax, col, scale, ref, xlabel in (
            (ax1, "alpha_diff", 1.0, 0.0, "α a − α b  (< 0: a's error falls faster)"),
            (ax2, "delta_error", 100.0, 0.0, f"ΔE = E_a − E_b (points; < 0: a better)\nat {scope}")):
        v = scale * last[col].to_numpy(float)
        lo, hi = scale * last[f"{col}_lo"].to_numpy(float), scale * last[f"{col}_hi"].to_numpy(float)
        decided = (lo > ref) | (hi < ref)
        for k in range(len(last)):
            color = "#0072B2" if decided[k] else "0.55"
            if np.isfinite(lo[k]):
                ax.plot([lo[k], hi[k]], [y[k], y[k]], color=color, lw=2)
            if np.isfinite(v[k]):
                ax.plot(v[k], y[k], "o", color=color, ms=6)
        ax.axvline(ref, color="0.3", ls="--", lw=1)
        ax.set_xlabel(xlabel, fontsize=9)
        ax.grid(True, axis="x", alpha=0.3)
        ax.set_ylim(-0.6, len(last) - 0.4)
        ax.set_yticks(y)
    ax1.set_yticklabels(labels, fontsize=8)
    ax2.yaxis.tick_right()
    ax2.set_yticklabels(at, fontsize=8)
    names = "; ".join(f"{n}: a = {g['a'].iloc[0]}, b = {g['b'].iloc[0]}" for n, g in comp.groupby("comparison", sort=False))
    fig.suptitle(title or "Comparison of scaling laws", fontsize=TITLE_FONTSIZE)
    fig.text(0.5, 0.005, names + " (blue: interval excludes the reference)", ha="center", fontsize=8)
    height = fig.get_size_inches()[1]
    fig.tight_layout(rect=(0, 0.35 / height, 1, 1 - 0.45 / height))
    return fig


# ---------------------------------------------------------------------------------------------
# the pipeline's steps


def input_table(table_path: str, input_name: str, settings: Mapping) -> pd.DataFrame:
    """An analysis step's input: the results table, with our groups' means for our runs."""
    from clipscale.table import add_group_means, groups_of, read_table

    table = read_table(table_path)
    groups = groups_of(settings) if input_name == "ours" else None
    return add_group_means(table, groups) if groups else table


def write_output(path: str, text_or_frame) -> None:
    """An analysis step's output: a frame as CSV or a text (its folder made)."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    if isinstance(text_or_frame, pd.DataFrame):
        text_or_frame.to_csv(path, index=False)
    else:
        Path(path).write_text(text_or_frame)


def extrapolation_step(table_path: str, input_name: str, settings: Mapping, runs: str, summary: str,
                       markdown: str, figures: Sequence[str]) -> None:
    """Rule fit_extrapolation: ``settings`` is clipscale.shaping.extrapolation's slice."""
    from clipscale.figures import save

    table = input_table(table_path, input_name, settings)
    out = extrapolation(table, input_name, settings.get("fit", {}), int(settings.get("seed", 0)))
    write_output(runs, out["runs"])
    write_output(summary, out["summary"])
    write_output(markdown, extrapolation_markdown(out["summary"], out["coverage"]))
    checked = sorted({k[:4] for k in out["fits"]})
    panels = main_panels(checked, input_name, settings)
    title = (f"Extrapolation check ({input_name}): laws fitted below the cut, {len(panels)} main tasks"
             + (f" (all {len(checked)} in extrapolation_{input_name}.md)" if len(panels) < len(checked) else ""))
    save(draw_extrapolation(table, out, title, panels), figures)
    log.info("%s: %d laws checked on %d held-out predictions", input_name, len(out["summary"]), len(out["runs"]))


def comparison_step(table_path: str, input_name: str, settings: Mapping, csv: str, markdown: str,
                    figures: Sequence[str]) -> None:
    """Rule fit_comparison: ``settings`` is clipscale.shaping.comparison's slice."""
    from clipscale.figures import save

    table = input_table(table_path, input_name, settings)
    fit_config = settings.get("fit", {})
    comp = comparison(table, input_name, fit_config, int(settings.get("seed", 0)), fit_config.get("comparisons"))
    write_output(csv, comp)
    write_output(markdown, comparison_markdown(comp))
    within = fit_config.get("comparison_figure_within", 10.0)
    save(draw_comparison(comp, f"Comparison of scaling laws ({input_name})",
                         data_ranges(table, input_name, fit_config.get("comparisons")), within), figures)
    log.info("%s: %d comparison rows", input_name, len(comp))


def bin_winners_step(table_path: str, input_name: str, settings: Mapping, csv: str, markdown: str) -> None:
    """Rule fit_bin_winners: ``settings`` is clipscale.shaping.bin_winners's slice."""
    table = input_table(table_path, input_name, settings)
    front = bin_winners(table, input_name, settings.get("fit", {}))
    write_output(csv, front)
    write_output(markdown, bin_winners_markdown(front))
    log.info("%s: %d bin winners", input_name, len(front))
