"""Adapter: rule fit_compute_optimal -> clipscale.compute_optimal.step."""

from clipscale.compute_optimal import step
from clipscale.logs import job_logging

with job_logging(snakemake.log[0]):  # noqa: F821
    sm = snakemake  # noqa: F821
    step(
        sm.input.table,
        sm.wildcards.input,
        sm.params.settings,  # clipscale.shaping.compute_optimal
        laws=sm.output.laws,
        optima_csv=sm.output.optima,
        runs=sm.output.runs,
        markdown_path=sm.output.md,
    )
