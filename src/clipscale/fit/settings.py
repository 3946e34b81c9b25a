"""The fit's settings, constants and output columns (FitSettings, FitError)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping

from clipscale.config import load_schema, schema_default


METHODS = ("binned", "direct", "pareto", "saturating")
DEFAULT_BIN_PAD = schema_default("fit", "bin_pad")  # decades above the largest log10 C (the paper's code: 0.1)
DIRECT_SOURCES = ("openai",)
MIN_SATURATING_POINTS = 6  # 4 parameters + 2 degrees of freedom
MIN_BOOTSTRAP_COMPUTES = schema_default("fit", "min_bootstrap_computes")  # fewer: a t-interval
T_METHODS = ("binned", "direct", "pareto")  # the power laws that get a t-interval on few computes
CELL_COLUMNS = ("source", "model", "data", "samples_seen", "total_gmac")  # rows of one cell differ in seed only

#: the saturating fit's settings (config fit.saturating): Huber delta on ln E residuals, the widest
#: bootstrap interval of c or d (orders of magnitude), the least AIC gain over the plain power law
SATURATING_DEFAULTS = {k: v["default"] for k, v in
                       load_schema()["properties"]["fit"]["properties"]["saturating"]["properties"].items()}
SAT_C_BOUNDS = (-5.0, -1e-6)
SAT_B_MAX = 1e3  # in units of the smallest compute

#: (architecture, samples seen) pairs beyond the published runs, as in the paper's Table 4
#: (the paper trained up to ViT-H/14 on 34B and ViT-g/14 on 13B samples seen).
DEFAULT_PUBLISHED_PREDICTIONS = [
    {"model": "ViT-L/14", "samples_seen": "68B"},
    {"model": "ViT-H/14", "samples_seen": "68B"},
    {"model": "ViT-g/14", "samples_seen": "34B"},
    {"model": "ViT-g/14", "samples_seen": "68B"},
    {"model": "ViT-G/14", "samples_seen": "34B"},
    {"model": "ViT-G/14", "samples_seen": "68B"},
]

COEFFICIENT_COLUMNS = [
    "input", "source", "task", "dataset", "metric", "method", "n_points", "n_fit", "c_min", "c_max",
    "alpha", "alpha_lo", "alpha_hi", "beta", "beta_lo", "beta_hi",
    "sat_a", "sat_b", "sat_c", "sat_c_lo", "sat_c_hi", "sat_d", "sat_d_lo", "sat_d_hi",
    "r2_log", "rmse_log", "bins", "bootstrap", "bootstrap_valid", "ci", "formula", "identifiable", "note",
    "interval", "n_runs", "seeds", "seed_sd_log",
]
PREDICTION_COLUMNS = [
    "input", "source", "task", "dataset", "metric", "method", "model", "samples_seen",
    "samples_seen_label", "gmac_per_sample", "total_gmac", "beyond_data",
    "error", "error_lo", "error_hi", "value", "value_lo", "value_hi",
    "error_pi_lo", "error_pi_hi", "value_pi_lo", "value_pi_hi",
]
POINT_COLUMNS = [
    "input", "source", "task", "dataset", "metric", "method", "total_gmac", "error", "bin",
    "n_in_bin", "run_total_gmac", "model", "data", "samples_seen_label",
]

# the bootstrap draws of the paper's fits (binned or direct): what figures draw bands from
DRAW_COLUMNS = ["input", "source", "task", "dataset", "metric", "method", "draw", "alpha", "beta"]
PAPER_METHODS = ("binned", "direct")


class FitError(ValueError):
    """Points that the method cannot fit (too few, or a single compute value)."""


@dataclass(frozen=True)
class FitSettings:
    """The config's ``fit`` section, typed once: what the fit, the analyses and the figures read.

    ``of`` builds it from a fit section (a validated config's, or a partial mapping for use
    outside the pipeline): a missing key takes the schema's default, written nowhere else."""

    bins: int
    bin_pad: float
    bootstrap: int
    ci: float
    methods: tuple[str, ...]
    saturating: dict
    predictions: tuple = ()
    extrapolation: dict = field(default_factory=dict)
    min_bootstrap_computes: int = MIN_BOOTSTRAP_COMPUTES

    @classmethod
    def of(cls, fit_config: Mapping | None = None) -> "FitSettings":
        given = dict(fit_config or {})

        def get(key):
            return given[key] if key in given else schema_default("fit", key)

        return cls(bins=int(get("bins")), bin_pad=float(get("bin_pad")), bootstrap=int(get("bootstrap")),
                   ci=float(get("ci")), methods=tuple(get("methods")),
                   saturating={**SATURATING_DEFAULTS, **(given.get("saturating") or {})},
                   predictions=tuple(given.get("predictions") or ()),
                   extrapolation=dict(given.get("extrapolation") or {}),
                   min_bootstrap_computes=int(get("min_bootstrap_computes")))
