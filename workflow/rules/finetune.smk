# 4b. fine-tuning (clipscale.finetune; finetune.enabled): the final checkpoints of the runs of
# finetune.runs, fine-tuned ImageNet-style (classification) and jointly on several tasks, then
# patched (patching): one job per (checkpoint, protocol), resumable from its state.pt, data parallel
# over the job's processes (finetune.nproc per node x finetune.nodes, started as training's ranks).
# A job that fails writes its reason to its result. Their rows make the fine-tuning table
# (aggregate_finetune, its log lists the failed jobs): the results table, our fits and figures
# never wait on fine-tuning; the fine-tuning figures read both tables.
from clipscale import resources as cs_resources


include: "finetune_functions.smk"


rule finetune:
    input:
        unpack(finetune_inputs),
    output:
        paths.FINETUNE_RESULT,
    log:
        log_path("finetune", "{model}", "{scale}", "{samples}", "{protocol}"),
    benchmark:
        bench_path("finetune", "{model}", "{scale}", "{samples}", "{protocol}")
    wildcard_constraints:
        protocol="classification|classification_in12k|classification_hires|classification_in12k_hires|patching",
    priority: cs_resources.priority(config, "finetune")
    threads: cs_resources.threads(config, "finetune")
    resources:
        **cs_resources.resources(config, "finetune"),
    params:
        # what shapes the result besides the checkpoint (a change reruns the job)
        shaping=lambda wc: shaping.finetune(config, wc.protocol, wc.model, wc.scale),
    script:
        "../scripts/finetune.py"


rule aggregate_finetune:
    input:
        finetune_targets(),
    output:
        table=paths.FINETUNE_TABLE,
        csv=paths.FINETUNE_CSV,
        results_log=paths.FINETUNE_LOG,
    log:
        log_path("aggregate_finetune", "finetune"),
    benchmark:
        bench_path("aggregate_finetune", "finetune")
    priority: cs_resources.priority(config, "aggregate_finetune")
    threads: cs_resources.threads(config, "aggregate_finetune")
    resources:
        **cs_resources.resources(config, "aggregate_finetune"),
    params:
        settings=shaping.aggregate(config),
    script:
        "../scripts/aggregate_finetune.py"
