"""Which runs win their compute bin (the points the binned fit goes through)."""

from __future__ import annotations

import logging
from collections.abc import Mapping

import numpy as np
import pandas as pd

from clipscale import fit as fitting
from clipscale.analysis.common import _groups, _settings

log = logging.getLogger("clipscale.analysis")


BIN_WINNER_COLUMNS = [
    "input", "source", "task", "dataset", "metric", "bin", "bin_lo_gmac", "bin_hi_gmac", "n_in_bin",
    "model", "data", "samples_seen_label", "total_gmac", "error", "on_pareto",
]


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
