"""Adapter: rule dedup_match -> clipscale.dedup.match_files (the pool index's duplicates left out)."""
import pandas as pd

from clipscale import dedup
from clipscale.logs import job_logging

with job_logging(snakemake.log[0]):  # noqa: F821
    sm = snakemake  # noqa: F821
    dedup.match_files(sm.input.pool, list(sm.input.tests), sm.params.radius, sm.output[0],
                      modes=list(sm.params.modes), crops=list(sm.params.crops),
                      embedding_pairs=sm.input.embedding or None,
                      pool_index=pd.read_parquet(sm.input.pool_index))
