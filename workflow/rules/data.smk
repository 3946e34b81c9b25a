# 1. data: the embedded default world (when pool.source is "world") and nested subsets.


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
    threads: 1
    resources:
        mem_mb=2000,
        runtime=30,
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
    threads: INDEX_THREADS
    resources:
        mem_mb=1000 + 100 * INDEX_THREADS,
        runtime=INDEX_MINUTES,
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
    threads: 1
    resources:
        mem_mb=1000,
        runtime=60,
    params:
        size=lambda wc: config["scales"][wc.scale],
        seed=config["seed"],
    script:
        "../scripts/subset.py"
