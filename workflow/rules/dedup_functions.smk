# Functions and constants of workflow/rules/dedup.smk (kept apart: a rule file holds rules only).
from clipscale import dedup as cs_dedup

DEDUP_GROUPS = cs_dedup.group_shards(pool_shards(), config["dedup"]["shards_per_job"])
DEDUP_SETS = [n for n, spec in config["downstream"].items() if spec.get("dedup", True)]
DEDUP_TESTS = expand(paths.DOWNSTREAM_HASHES, dataset=DEDUP_SETS)
DEDUP_POOL_SHARDS = sum(len(group) for group in DEDUP_GROUPS.values())
# matching modes (clipscale.dedup.modes): the variants each hash job adds, the modes removed
DEDUP_MODES = cs_dedup.settings(config["dedup"])
DEDUP_TEST_VARIANTS = cs_dedup.downstream_variants(
    DEDUP_MODES["modes"], DEDUP_MODES["crops"]
)
DEDUP_POOL_VARIANTS = cs_dedup.pool_variants(
    DEDUP_MODES["modes"], DEDUP_MODES["trim_pool"]
)
DEDUP_REMOVE = cs_dedup.removal_modes(config["dedup"])
# mode embedding: the checkpoint that encodes the images (one of our runs, or a user's file)
DEDUP_ENCODER = (
    cs_dedup.encoder(config) if "embedding" in DEDUP_MODES["modes"] else None
)


def dedup_encoder_input():
    """What encoding waits for: our run's record (its final checkpoint) or the user's file."""
    if DEDUP_ENCODER is None:
        return []
    if "checkpoint" in DEDUP_ENCODER:
        return DEDUP_ENCODER["checkpoint"]
    return paths.fill(paths.RUN_DONE, **DEDUP_ENCODER["run"].wildcards)


def dedup_encoder_params():
    """The encoder as the features depend on it: the model and its definition, and the file
    (a run's checkpoint follows its record, an input)."""
    if DEDUP_ENCODER is None:
        return {}
    name = DEDUP_ENCODER["model"]
    return {
        "model": name,
        "definition": config["models"].get(name),
        "source": DEDUP_ENCODER.get("checkpoint") or DEDUP_ENCODER["run"].name,
    }


def dedup_embedding_matches():
    """The match job's input of mode embedding's pairs (none without the mode)."""
    return paths.EMBEDDING_MATCHES if DEDUP_ENCODER is not None else []


# what reading a downstream set waits for (the world, or nothing for a user's set)
DEDUP_SET_INPUTS = sorted({f for name in DEDUP_SETS for f in downstream_input(name)})
# sizes of the pool hash jobs (clipscale.resources): shards in the pool, in each group
DEDUP_SIZES = {
    "pool_shards": DEDUP_POOL_SHARDS,
    "group_sizes": {group: len(shards) for group, shards in DEDUP_GROUPS.items()},
}


def dedup_targets():
    if not DEDUP_SETS:
        return []
    targets = [paths.OVERLAP_TABLE, paths.CONTACT_SHEET, paths.HASH_REPORT]
    if USE_WORLD:
        targets.append(paths.PLANTED_RECALL)
    if config["dedup"]["remove_duplicates"]:
        targets += expand(paths.SUBSET_DEDUP_MANIFEST, scale=config["grid"]["scales"])
    return targets
