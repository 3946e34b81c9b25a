"""Adapter: rule fit_comparison -> clipscale.analysis.comparison_step."""

from clipscale.analysis import comparison_step
from clipscale.logs import job_logging

with job_logging(snakemake.log[0]):  # noqa: F821
    sm = snakemake  # noqa: F821
    comparison_step(
        sm.input.table,
        sm.wildcards.input,
        sm.params.settings,  # clipscale.shaping.comparison
        csv=sm.output.csv,
        markdown=sm.output.md,
        figures=[sm.output.pdf, sm.output.png],
    )
