"""Adapter: rules dedup_hash_pool / dedup_hash_downstream -> clipscale.dedup.hash_shards."""
from clipscale import dedup
from clipscale.logs import job_logging

with job_logging(snakemake.log[0]):  # noqa: F821 (snakemake injects it)
    sm = snakemake  # noqa: F821
    if sm.rule == "dedup_hash_downstream":
        tars = dedup.downstream_test_shards(sm.params.dataset_dir, "test")
        name = sm.wildcards.dataset
    else:
        tars, name = list(sm.input), sm.wildcards.group
    dedup.hash_shards(tars, sm.output[0], name=name)
