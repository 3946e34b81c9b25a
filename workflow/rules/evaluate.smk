# 4. evaluate: clip_benchmark on every checkpoint (clipscale.evaluate), one job per checkpoint
# (every downstream set and task in one process, the model loaded once), then one tidy results
# table. Checkpoints: each run's final one (all of them with evaluate.all_checkpoints) and the
# released ones of evaluate.released (clipscale.released). Each (set, task) is a result file of
# its own, flagged update: a rerun (a set added, one set's settings changed) keeps the results
# whose settings and checkpoint are unchanged (clipscale.evaluate.job). A failed evaluation
# writes its reason to its result file; aggregate_results lists it, and every missing result,
# in results/results/results_log.txt.
from clipscale import resources as cs_resources


include: "evaluate_functions.smk"


rule evaluate:
    input:
        unpack(evaluate_inputs),
    output:
        [update(p) for p in EVAL_OUTPUTS],
    log:
        evaluate_log("log"),
    benchmark:
        evaluate_log("benchmark")
    wildcard_constraints:
        source="ours|released",
        epoch="[0-9]+|final",
    priority: cs_resources.priority(config, "evaluate")
    threads: cs_resources.threads(config, "evaluate")
    resources:
        # evaluate.gpus as the resource "gpu" (the slurm plugin's --gpus)
        **cs_resources.resources(config, "evaluate"),
    params:
        # what shapes each result besides the checkpoint: a change reruns the job, which
        # recomputes only the results whose settings changed
        shaping=lambda wc: evaluation_shaping(wc),
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
    priority: cs_resources.priority(config, "aggregate_results")
    threads: cs_resources.threads(config, "aggregate_results")
    resources:
        **cs_resources.resources(config, "aggregate_results"),
    params:
        settings=shaping.aggregate(config),
    script:
        "../scripts/aggregate_results.py"
