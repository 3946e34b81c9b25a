"""Adapter: rule fit_bin_winners -> clipscale.analysis.bin_winners_step."""

from clipscale.analysis import bin_winners_step
from clipscale.logs import job_logging

with job_logging(snakemake.log[0]):  # noqa: F821
    sm = snakemake  # noqa: F821
    bin_winners_step(
        sm.input.table,
        sm.wildcards.input,
        sm.params.settings,  # clipscale.shaping.bin_winners
        csv=sm.output.csv,
        markdown=sm.output.md,
    )
