# 2. dedup: are the downstream test images in the pool? (the paper's Sec. 3 and Table 3)
# pHash every pool image (one job per dedup.shards_per_job shards, processes sized by clipscale.resources) and
# every downstream test image (one job per set), gather the pool hashes, match within
# dedup.radius, then report. dedup.modes adds hashes of variants of the test images (mirror,
# trim, crops; trim also of the pool images) in the same jobs, reported per mode.


from clipscale import resources as cs_resources


include: "dedup_functions.smk"


rule dedup_hash_pool:
    input:
        lambda wc: pool_input(DEDUP_GROUPS[wc.group]),
    output:
        paths.POOL_HASHES,
    log:
        log_path("dedup_hash_pool", "{group}"),
    benchmark:
        bench_path("dedup_hash_pool", "{group}")
    priority: cs_resources.priority(config, "dedup_hash_pool")
    threads: cs_resources.threads(config, "dedup_hash_pool", **DEDUP_SIZES)
    resources:
        **cs_resources.resources(config, "dedup_hash_pool", **DEDUP_SIZES),
    params:
        shards=lambda wc: DEDUP_GROUPS[wc.group],
        # a user's pool: reruns when one of the group's shards is added, removed or rewritten
        stamp=lambda wc: pool_stamp(DEDUP_GROUPS[wc.group]),
        # mode trim with dedup.trim_pool: a phash_trim column
        variants=DEDUP_POOL_VARIANTS,
    script:
        "../scripts/dedup_hash.py"


rule dedup_hash_downstream:
    input:
        lambda wc: downstream_input(wc.dataset),
    output:
        paths.DOWNSTREAM_HASHES,
    log:
        log_path("dedup_hash_downstream", "{dataset}"),
    benchmark:
        bench_path("dedup_hash_downstream", "{dataset}")
    priority: cs_resources.priority(config, "dedup_hash_downstream")
    threads: cs_resources.threads(config, "dedup_hash_downstream")
    resources:
        **cs_resources.resources(config, "dedup_hash_downstream"),
    params:
        dataset_dir=lambda wc: downstream_dir(wc.dataset),
        # the test images' variants of the matching modes (mirror, trim, crop80, ...)
        variants=DEDUP_TEST_VARIANTS,
    script:
        "../scripts/dedup_hash.py"


rule dedup_gather:
    input:
        pool=expand(paths.POOL_HASHES, group=list(DEDUP_GROUPS)),
        downstream=DEDUP_TESTS,
    output:
        hashes=paths.ALL_POOL_HASHES,
        report=paths.HASH_REPORT,
    log:
        log_path("dedup_gather", "pool"),
    benchmark:
        bench_path("dedup_gather", "pool")
    priority: cs_resources.priority(config, "dedup_gather")
    threads: cs_resources.threads(config, "dedup_gather", pool_shards=DEDUP_POOL_SHARDS)
    resources:
        **cs_resources.resources(config, "dedup_gather", pool_shards=DEDUP_POOL_SHARDS),
    script:
        "../scripts/dedup_gather.py"


rule dedup_embed_pool:
    input:
        shards=lambda wc: pool_input(DEDUP_GROUPS[wc.group]),
        encoder=dedup_encoder_input(),
    output:
        paths.POOL_EMBEDDINGS,
    log:
        log_path("dedup_embed_pool", "{group}"),
    benchmark:
        bench_path("dedup_embed_pool", "{group}")
    priority: cs_resources.priority(config, "dedup_embed_pool")
    threads: cs_resources.threads(config, "dedup_embed_pool", **DEDUP_SIZES)
    resources:
        **cs_resources.resources(config, "dedup_embed_pool", **DEDUP_SIZES),
    params:
        shards=lambda wc: DEDUP_GROUPS[wc.group],
        stamp=lambda wc: pool_stamp(DEDUP_GROUPS[wc.group]),
        encoder=dedup_encoder_params(),
    script:
        "../scripts/dedup_embed.py"


rule dedup_embed_downstream:
    input:
        images=lambda wc: downstream_input(wc.dataset),
        encoder=dedup_encoder_input(),
    output:
        paths.DOWNSTREAM_EMBEDDINGS,
    log:
        log_path("dedup_embed_downstream", "{dataset}"),
    benchmark:
        bench_path("dedup_embed_downstream", "{dataset}")
    priority: cs_resources.priority(config, "dedup_embed_downstream")
    threads: cs_resources.threads(config, "dedup_embed_downstream")
    resources:
        **cs_resources.resources(config, "dedup_embed_downstream"),
    params:
        dataset_dir=lambda wc: downstream_dir(wc.dataset),
        encoder=dedup_encoder_params(),
    script:
        "../scripts/dedup_embed.py"


rule dedup_match_embedding:
    input:
        pool=expand(paths.POOL_EMBEDDINGS, group=list(DEDUP_GROUPS)),
        tests=expand(paths.DOWNSTREAM_EMBEDDINGS, dataset=DEDUP_SETS),
    output:
        paths.EMBEDDING_MATCHES,
    log:
        log_path("dedup_match_embedding", "matches"),
    benchmark:
        bench_path("dedup_match_embedding", "matches")
    priority: cs_resources.priority(config, "dedup_match_embedding")
    threads: cs_resources.threads(config, "dedup_match_embedding", pool_shards=DEDUP_POOL_SHARDS)
    resources:
        **cs_resources.resources(
            config, "dedup_match_embedding", pool_shards=DEDUP_POOL_SHARDS
        ),
    params:
        threshold=config["dedup"]["embedding"]["threshold"],
    script:
        "../scripts/dedup_match_embedding.py"


rule dedup_match:
    input:
        pool=paths.ALL_POOL_HASHES,
        tests=DEDUP_TESTS,
        embedding=dedup_embedding_matches(),
        # its duplicate samples are not matched: each pool sample counts once
        pool_index=paths.POOL_INDEX,
    output:
        paths.MATCHES,
    log:
        log_path("dedup_match", "matches"),
    benchmark:
        bench_path("dedup_match", "matches")
    priority: cs_resources.priority(config, "dedup_match")
    threads: cs_resources.threads(config, "dedup_match", pool_shards=DEDUP_POOL_SHARDS)
    resources:
        **cs_resources.resources(config, "dedup_match", pool_shards=DEDUP_POOL_SHARDS),
    params:
        radius=config["dedup"]["radius"],
        modes=DEDUP_MODES["modes"],
        crops=DEDUP_MODES["crops"],
    script:
        "../scripts/dedup_match.py"


rule dedup_overlap:
    input:
        matches=paths.MATCHES,
        tests=DEDUP_TESTS,
    output:
        paths.OVERLAP_TABLE,
    log:
        log_path("dedup_overlap", "overlap"),
    benchmark:
        bench_path("dedup_overlap", "overlap")
    priority: cs_resources.priority(config, "dedup_overlap")
    threads: cs_resources.threads(config, "dedup_overlap")
    resources:
        **cs_resources.resources(config, "dedup_overlap"),
    params:
        radius=config["dedup"]["radius"],
        modes=DEDUP_MODES["modes"],
    script:
        "../scripts/dedup_overlap.py"


rule dedup_contact_sheet:
    input:
        matches=paths.MATCHES,
        images=DEDUP_SET_INPUTS,
    output:
        paths.CONTACT_SHEET,
    log:
        log_path("dedup_contact_sheet", "contact_sheet"),
    benchmark:
        bench_path("dedup_contact_sheet", "contact_sheet")
    priority: cs_resources.priority(config, "dedup_contact_sheet")
    threads: cs_resources.threads(config, "dedup_contact_sheet")
    resources:
        **cs_resources.resources(config, "dedup_contact_sheet"),
    params:
        pairs=config["dedup"]["contact_sheet_pairs"],
        seed=config["seed"],
    script:
        "../scripts/dedup_contact_sheet.py"


rule dedup_planted_recall:
    input:
        matches=paths.MATCHES,
        planted=paths.WORLD_DUPLICATES,
        pool=paths.ALL_POOL_HASHES,
        tests=DEDUP_TESTS,
    output:
        paths.PLANTED_RECALL,
    log:
        log_path("dedup_planted_recall", "planted_recall"),
    benchmark:
        bench_path("dedup_planted_recall", "planted_recall")
    priority: cs_resources.priority(config, "dedup_planted_recall")
    threads: cs_resources.threads(config, "dedup_planted_recall")
    resources:
        **cs_resources.resources(config, "dedup_planted_recall"),
    params:
        radius=config["dedup"]["radius"],
        modes=DEDUP_MODES["modes"],
    script:
        "../scripts/dedup_planted_recall.py"


rule dedup_filter_subset:
    input:
        manifest=paths.SUBSET_MANIFEST,
        matches=paths.MATCHES,
    output:
        paths.SUBSET_DEDUP_MANIFEST,
    log:
        log_path("dedup_filter_subset", "{scale}"),
    benchmark:
        bench_path("dedup_filter_subset", "{scale}")
    priority: cs_resources.priority(config, "dedup_filter_subset")
    threads: cs_resources.threads(config, "dedup_filter_subset", pool_shards=DEDUP_POOL_SHARDS)
    resources:
        **cs_resources.resources(
            config, "dedup_filter_subset", pool_shards=DEDUP_POOL_SHARDS
        ),
    params:
        modes=DEDUP_REMOVE,
    script:
        "../scripts/dedup_filter_subset.py"
