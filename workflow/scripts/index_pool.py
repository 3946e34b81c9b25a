"""Adapter: rule index_pool -> clipscale.subsets.build_index."""
import logging
from pathlib import Path

from clipscale.logs import job_logging
from clipscale.subsets import build_index

with job_logging(snakemake.log[0]):  # noqa: F821
    # the pool directory is where its shards (this rule's inputs) are
    index = build_index(Path(snakemake.input[0]).parent)  # noqa: F821
    index.to_parquet(snakemake.output[0], index=False)  # noqa: F821
    bad = index[index["skipped"] > 0]
    logging.info("pool: %d shards, %d samples", len(index), index["n_samples"].sum())
    for row in bad.itertuples():
        logging.warning("shard %s: %d unreadable members or a truncated tar", row.path, row.skipped)
