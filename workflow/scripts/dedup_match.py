"""Adapter: rule dedup_match -> clipscale.dedup.match_files."""
from clipscale import dedup
from clipscale.logs import job_logging

with job_logging(snakemake.log[0]):  # noqa: F821
    sm = snakemake  # noqa: F821
    dedup.match_files(sm.input.pool, list(sm.input.tests), sm.params.radius, sm.output[0],
                      modes=list(sm.params.modes), crops=list(sm.params.crops),
                      embedding_pairs=sm.input.embedding or None)
