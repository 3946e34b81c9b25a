"""Adapter: rule fit_collect -> clipscale.fit.collect_step (one table over all inputs)."""

from clipscale.fit import collect_step
from clipscale.logs import job_logging

with job_logging(snakemake.log[0]):  # noqa: F821
    sm = snakemake  # noqa: F821
    collect_step(
        list(sm.input.coefficients),
        list(sm.input.predictions),
        coefficients=sm.output.coefficients,
        predictions=sm.output.predictions,
        coefficients_md=sm.output.coefficients_md,
        predictions_md=sm.output.predictions_md,
    )
