"""Adapter: rule index_pool -> clipscale.subsets.build_index (problem shards logged as warnings)."""
import logging

from clipscale.logs import job_logging
from clipscale.subsets import build_index, pool_missing, pool_problems, pool_summary

with job_logging(snakemake.log[0]):  # noqa: F821
    sm = snakemake  # noqa: F821
    # params.pool: the pool directory (a user's pool is no input file: see pool_input)
    index = build_index(sm.params.pool, workers=sm.threads)
    index.to_parquet(sm.output[0], index=False)
    logging.info("%s", pool_summary(index))
    for line in pool_missing(index):  # failed downloads: missing samples, not broken shards
        logging.info("%s", line)
    for line in pool_problems(index):
        logging.warning("shard %s", line)
