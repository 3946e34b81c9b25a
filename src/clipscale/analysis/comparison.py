"""Which of two laws scales better: slopes, their difference, the crossing, with bootstrap intervals."""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from clipscale import fit as fitting
from clipscale.analysis.common import GROUP, _settings

log = logging.getLogger("clipscale.analysis")


COMPARISON_COLUMNS = [
    "comparison", "input", "a", "b", "task", "dataset", "metric", "method_a", "method_b", "n_a", "n_b",
    "alpha_a", "alpha_a_lo", "alpha_a_hi", "alpha_b", "alpha_b_lo", "alpha_b_hi",
    "alpha_ratio", "alpha_ratio_lo", "alpha_ratio_hi", "alpha_diff", "alpha_diff_lo", "alpha_diff_hi",
    "steeper", "steeper_decided", "crossing_gmac", "crossing_lo", "crossing_hi", "crossing_share",
    "crossing_in_range", "range_lo", "range_hi", "crossing", "compute_gmac", "error_a", "error_b",
    "delta_error", "delta_error_lo", "delta_error_hi", "better", "better_decided", "pairs", "ci",
]


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
