# 1. data: the embedded default world (when pool.source is "world") and nested subsets.


from clipscale import resources as cs_resources


include: "data_functions.smk"


rule make_world:
    output:
        done=paths.WORLD_DONE,
        duplicates=paths.WORLD_DUPLICATES,
        shards=pool_shards() if USE_WORLD else [],
    log:
        log_path("make_world", "world"),
    benchmark:
        bench_path("make_world", "world")
    priority: cs_resources.priority(config, "make_world")
    threads: cs_resources.threads(config, "make_world")
    resources:
        **cs_resources.resources(config, "make_world"),
    params:
        world=shaping.world(config),
    script:
        "../scripts/make_world.py"


rule index_pool:
    input:
        pool_input(pool_shards()),
    output:
        paths.POOL_INDEX,
    log:
        log_path("index_pool", "pool"),
    benchmark:
        bench_path("index_pool", "pool")
    priority: cs_resources.priority(config, "index_pool")
    threads: cs_resources.threads(config, "index_pool", pool_shards=len(pool_shards()))
    resources:
        **cs_resources.resources(config, "index_pool", pool_shards=len(pool_shards())),
    params:
        pool=lambda wc: pool_dir(),
        # a user's pool: reruns when a shard is added, removed or rewritten
        stamp=lambda wc: pool_stamp(pool_shards()),
    script:
        "../scripts/index_pool.py"


rule subset:
    input:
        paths.POOL_INDEX,
    output:
        paths.SUBSET_MANIFEST,
    log:
        log_path("subset", "{scale}"),
    benchmark:
        bench_path("subset", "{scale}")
    priority: cs_resources.priority(config, "subset")
    threads: cs_resources.threads(config, "subset")
    resources:
        **cs_resources.resources(config, "subset"),
    params:
        size=lambda wc: config["scales"][wc.scale],
        seed=config["seed"],
    script:
        "../scripts/subset.py"
