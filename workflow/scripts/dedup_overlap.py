"""Adapter: rule dedup_overlap -> clipscale.dedup.overlap_table (the paper's Table 3)."""
import logging

from clipscale import dedup
from clipscale.logs import job_logging

with job_logging(snakemake.log[0]):  # noqa: F821
    sm = snakemake  # noqa: F821
    table = dedup.overlap_table(dedup.read_matches(sm.input.matches), list(sm.input.tests),
                                sm.params.radius, list(sm.params.modes))
    table.to_csv(sm.output[0], index=False)
    logging.info("overlap of the downstream test sets with the pool:\n%s", table.to_string(index=False))
