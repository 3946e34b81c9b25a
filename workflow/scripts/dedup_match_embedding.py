"""Adapter: rule dedup_match_embedding -> clipscale.dedup.match_embeddings."""
from clipscale import dedup
from clipscale.logs import job_logging

with job_logging(snakemake.log[0]):  # noqa: F821
    sm = snakemake  # noqa: F821
    dedup.match_embeddings(list(sm.input.tests), list(sm.input.pool), sm.params.threshold, sm.output[0])
