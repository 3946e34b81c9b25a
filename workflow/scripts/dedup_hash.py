"""Adapter: rules dedup_hash_pool / dedup_hash_downstream -> clipscale.dedup.hash_shards."""
from clipscale import dedup
from clipscale.logs import job_logging

with job_logging(snakemake.log[0]):  # noqa: F821 (snakemake injects it)
    sm = snakemake  # noqa: F821
    if sm.rule == "dedup_hash_downstream":
        tars = dedup.downstream_test_shards(sm.params.dataset_dir, "test")
        name = sm.wildcards.dataset
    else:
        # params.shards: the group's shards (a user's pool is no input file: see pool_input)
        tars, name = sm.params.shards, sm.wildcards.group
    dedup.hash_shards(tars, sm.output[0], name=name, workers=sm.threads,
                      variants=list(sm.params.variants))
