"""Adapter: rule subset -> clipscale.subsets.write_subset."""
import logging
from pathlib import Path

import pandas as pd

from clipscale.logs import job_logging
from clipscale.subsets import write_subset

with job_logging(snakemake.log[0]):  # noqa: F821
    sm = snakemake  # noqa: F821
    manifest = write_subset(pd.read_parquet(sm.input[0]), sm.wildcards.scale, sm.params.size,
                            sm.params.seed, Path(sm.output[0]).parent)
    logging.info("subset %s: %d samples in %d shards", sm.wildcards.scale, manifest["n_samples"],
                 manifest["n_shards"])
