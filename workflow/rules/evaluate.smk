# 4. evaluate: clip_benchmark on every checkpoint x downstream set x task (clipscale.evaluate),
# then one tidy results table. Checkpoints: each run's final one (all of them with
# evaluate.all_checkpoints) and the released ones of evaluate.released (clipscale.released).
# A failed evaluation writes its reason to its result file; aggregate_results lists it, and every
# missing result, in results/results/results_log.txt.
include: "evaluate_functions.smk"


rule evaluate:
    input:
        unpack(evaluate_inputs),
    output:
        paths.EVAL,
    log:
        evaluate_log("log"),
    benchmark:
        evaluate_log("benchmark")
    wildcard_constraints:
        source="ours|released",
        epoch="[0-9]+|final",
        task="zeroshot_classification|zeroshot_retrieval|linear_probe",
    threads: EVAL_CONFIG["threads"]
    resources:
        mem_mb=EVAL_CONFIG["mem_mb"],
        runtime=EVAL_CONFIG["runtime"],
        gpus=EVAL_CONFIG["gpus"],
    params:
        # what shapes the result besides the checkpoint (a change reruns it)
        shaping=lambda wc: shaping.evaluate(
            config, wc.source, wc.model, wc.scale, wc.dataset, wc.task
        ),
    script:
        "../scripts/evaluate.py"


rule aggregate_results:
    input:
        evals=EVAL_TARGETS,
        runs=train_targets(),
        pool_index=paths.POOL_INDEX,
    output:
        table=paths.RESULTS_TABLE,
        csv=paths.RESULTS_CSV,
        results_log=paths.RESULTS_LOG,
    log:
        log_path("aggregate_results", "results"),
    benchmark:
        bench_path("aggregate_results", "results")
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        settings=shaping.aggregate(config),
    script:
        "../scripts/aggregate_results.py"
