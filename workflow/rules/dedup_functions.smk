# Functions and constants of workflow/rules/dedup.smk (kept apart: a rule file holds rules only).
from clipscale import dedup as cs_dedup

DEDUP_GROUPS = cs_dedup.group_shards(pool_shards(), config["dedup"]["shards_per_job"])
DEDUP_SETS = [n for n, spec in config["downstream"].items() if spec.get("dedup", True)]
DEDUP_TESTS = expand(paths.DOWNSTREAM_HASHES, dataset=DEDUP_SETS)
DEDUP_POOL_SHARDS = sum(len(group) for group in DEDUP_GROUPS.values())
# what reading a downstream set waits for (the world, or nothing for a user's set)
DEDUP_SET_INPUTS = sorted({f for name in DEDUP_SETS for f in downstream_input(name)})
# a pool hash job hashes its shards in up to 8 processes (one shard each at a time)
DEDUP_THREADS = min(8, config["dedup"]["shards_per_job"], DEDUP_POOL_SHARDS)
# walltimes (min): streaming the whole pool's hashes (gather, match) or copying its shards
# (filter)
DEDUP_STREAM_MINUTES = max(10, DEDUP_POOL_SHARDS // 1000)
DEDUP_COPY_MINUTES = max(10, DEDUP_POOL_SHARDS // 10)


def dedup_hash_minutes(n_shards):
    """Walltime (min) of a pool hash job: ~10k images per LAION shard at ~500 images/s per
    process (benchmarks/bench_dedup.py: 580), with a margin of 2."""
    return max(10, 2 * n_shards * 10_000 // (500 * DEDUP_THREADS * 60))


def dedup_targets():
    if not DEDUP_SETS:
        return []
    targets = [paths.OVERLAP_TABLE, paths.CONTACT_SHEET, paths.HASH_REPORT]
    if USE_WORLD:
        targets.append(paths.PLANTED_RECALL)
    if config["dedup"]["remove_duplicates"]:
        targets += expand(paths.SUBSET_DEDUP_MANIFEST, scale=config["grid"]["scales"])
    return targets
