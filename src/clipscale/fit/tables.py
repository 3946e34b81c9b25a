"""The fit's tables: coefficients, points, draws, predictions (data frames and markdown), and laws read back
from them."""

from __future__ import annotations

import logging
import math
from typing import Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

from clipscale.config import format_count, parse_count
from clipscale.fit.law import Fit
from clipscale.fit.settings import (COEFFICIENT_COLUMNS, DEFAULT_PUBLISHED_PREDICTIONS, DRAW_COLUMNS,
                                    MIN_BOOTSTRAP_COMPUTES, PAPER_METHODS, POINT_COLUMNS, PREDICTION_COLUMNS)

log = logging.getLogger("clipscale.fit")


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
