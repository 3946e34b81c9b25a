"""Adapter: rule fit_frontier -> clipscale.analysis.frontier_step."""

from clipscale.analysis import frontier_step
from clipscale.logs import job_logging

with job_logging(snakemake.log[0]):  # noqa: F821
    sm = snakemake  # noqa: F821
    frontier_step(
        sm.input.table,
        sm.wildcards.input,
        sm.params.settings,  # clipscale.shaping.frontier
        csv=sm.output.csv,
        markdown=sm.output.md,
    )
