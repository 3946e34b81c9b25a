"""Adapter: rule fit_input -> clipscale.fit.run_step (fit one results table)."""

from clipscale.fit import run_step
from clipscale.logs import job_logging

with job_logging(snakemake.log[0]):  # noqa: F821
    sm = snakemake  # noqa: F821
    run_step(
        sm.input.table,
        sm.wildcards.input,
        sm.params.settings,  # fit.*, seed, models' GMAC, groups (clipscale.shaping.fit)
        coefficients=sm.output.coefficients,
        predictions=sm.output.predictions,
        points=sm.output.points,
        draws=sm.output.draws,
        coefficients_md=sm.output.coefficients_md,
        predictions_md=sm.output.predictions_md,
    )
