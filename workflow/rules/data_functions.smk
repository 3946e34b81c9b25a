# Functions and constants of workflow/rules/data.smk (kept apart: a rule file holds rules only).

# the pool index scans every shard's tar headers (~45,000 samples/s per core; LAION shards hold
# ~10,000 samples): up to 8 processes, walltime (min) for that with a margin of 2
INDEX_THREADS = min(8, len(pool_shards()))
INDEX_MINUTES = max(
    60, 2 * len(pool_shards()) * 10_000 // (45_000 * INDEX_THREADS * 60)
)


def data_targets():
    return expand(paths.SUBSET_MANIFEST, scale=config["grid"]["scales"])
