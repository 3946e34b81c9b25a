"""The fit step: read a results table, fit it, write its outputs (``run``, ``run_step``, ``collect_step``)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import pandas as pd

from clipscale.fit.fitting import fit_table
from clipscale.fit.settings import COEFFICIENT_COLUMNS, FitSettings, PREDICTION_COLUMNS
from clipscale.fit.tables import (coefficients_frame, coefficients_markdown, default_targets, draws_frame,
                                  points_frame, predictions_frame, predictions_markdown, resolve_targets)
from clipscale.table import read_table

log = logging.getLogger("clipscale.fit")


# ---------------------------------------------------------------------------------------------
# the whole step, as run by the pipeline


def run(table: pd.DataFrame, input_name: str, fit_config: Mapping, seed: int, arch_gmac: Mapping[str, float],
        model_gmac: Mapping[str, float] | None = None, groups: Mapping[str, Iterable[str]] | None = None
        ) -> dict[str, pd.DataFrame]:
    """Fit a results table as configured; returns coefficients, predictions and points frames."""
    from clipscale.table import add_group_means

    if groups:
        table = add_group_means(table, groups)
    st = FitSettings.of(fit_config)
    # the paper's method always (the figures draw its laws), then the configured others
    methods = list(dict.fromkeys(["paper", *st.methods]))
    fits = fit_table(table, input_name=input_name, bins=st.bins, bootstrap=st.bootstrap, ci=st.ci,
                     seed=seed, methods=methods, pad=st.bin_pad, saturating_options=st.saturating,
                     min_bootstrap_computes=st.min_bootstrap_computes)
    wanted = list(st.predictions) or default_targets(table, input_name)
    targets = resolve_targets(wanted, table, arch_gmac, model_gmac)
    return {
        "coefficients": coefficients_frame(fits),
        "predictions": predictions_frame(fits, targets),
        "points": points_frame(fits),
        "draws": draws_frame(fits),
    }


def model_gmac_of(config: Mapping) -> dict[str, float]:
    """GMAC per sample that the config states for its models, by name and by label."""
    out = {}
    for name, spec in config.get("models", {}).items():
        if spec.get("gmac_per_sample"):
            out[name] = float(spec["gmac_per_sample"])
            if spec.get("label"):
                out[spec["label"]] = float(spec["gmac_per_sample"])
    return out


def run_step(table_path: str, input_name: str, config: Mapping, coefficients: str, predictions: str,
             points: str, coefficients_md: str | None = None, predictions_md: str | None = None,
             draws: str | None = None) -> None:
    """The pipeline's fit of one input ("published" or "ours"): read, fit, write CSV and Markdown."""
    from clipscale.reference import gmac_lookup
    from clipscale.table import groups_of

    table = read_table(table_path)
    fit_config = dict(config.get("fit", {}))
    groups = groups_of(config) if input_name == "ours" else None
    out = run(table, input_name, fit_config, int(config.get("seed", 0)), gmac_lookup(),
              model_gmac=model_gmac_of(config), groups=groups)
    write_outputs(out, coefficients, predictions, points, draws=draws)
    if coefficients_md:
        Path(coefficients_md).parent.mkdir(parents=True, exist_ok=True)
        Path(coefficients_md).write_text(coefficients_markdown(out["coefficients"]))
    if predictions_md:
        Path(predictions_md).parent.mkdir(parents=True, exist_ok=True)
        Path(predictions_md).write_text(predictions_markdown(out["predictions"]))
    log.info("%s: %d fits, %d predictions", input_name, len(out["coefficients"]), len(out["predictions"]))


def collect_step(coefficient_csvs: Sequence[str], prediction_csvs: Sequence[str], coefficients: str,
                 predictions: str, coefficients_md: str | None = None, predictions_md: str | None = None) -> None:
    """Concatenate the per-input fits into the pipeline's coefficient and prediction tables."""
    coef = pd.concat([pd.read_csv(p) for p in coefficient_csvs], ignore_index=True) if coefficient_csvs \
        else pd.DataFrame(columns=COEFFICIENT_COLUMNS)
    pred = pd.concat([pd.read_csv(p) for p in prediction_csvs], ignore_index=True) if prediction_csvs \
        else pd.DataFrame(columns=PREDICTION_COLUMNS)
    for path, frame in ((coefficients, coef), (predictions, pred)):
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        frame.to_csv(path, index=False)
    if coefficients_md:
        Path(coefficients_md).parent.mkdir(parents=True, exist_ok=True)
        Path(coefficients_md).write_text(coefficients_markdown(coef))
    if predictions_md:
        Path(predictions_md).parent.mkdir(parents=True, exist_ok=True)
        Path(predictions_md).write_text(predictions_markdown(pred))


def write_outputs(out: Mapping[str, pd.DataFrame], coefficients: str, predictions: str | None = None,
                  points: str | None = None, markdown_dir: str | None = None,
                  markdown_names: tuple[str, str] = ("coefficients.md", "predictions.md"),
                  draws: str | None = None) -> None:
    Path(coefficients).parent.mkdir(parents=True, exist_ok=True)
    out["coefficients"].to_csv(coefficients, index=False)
    if draws:
        Path(draws).parent.mkdir(parents=True, exist_ok=True)
        out["draws"].to_csv(draws, index=False)
    if predictions:
        Path(predictions).parent.mkdir(parents=True, exist_ok=True)
        out["predictions"].to_csv(predictions, index=False)
    if points:
        Path(points).parent.mkdir(parents=True, exist_ok=True)
        out["points"].to_csv(points, index=False)
    if markdown_dir:
        d = Path(markdown_dir)
        d.mkdir(parents=True, exist_ok=True)
        (d / markdown_names[0]).write_text(coefficients_markdown(out["coefficients"]))
        (d / markdown_names[1]).write_text(predictions_markdown(out["predictions"]))
