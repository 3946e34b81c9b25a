"""Adapter: rule fit_extrapolation -> clipscale.analysis.extrapolation_step."""

from clipscale.analysis import extrapolation_step
from clipscale.logs import job_logging

with job_logging(snakemake.log[0]):  # noqa: F821
    sm = snakemake  # noqa: F821
    extrapolation_step(
        sm.input.table,
        sm.wildcards.input,
        sm.params.settings,  # clipscale.shaping.extrapolation
        runs=sm.output.runs,
        summary=sm.output.summary,
        markdown=sm.output.md,
        figures=[sm.output.pdf, sm.output.png],
    )
