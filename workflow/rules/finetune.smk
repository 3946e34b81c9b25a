# 4b. fine-tuning (clipscale.finetune; finetune.enabled): the final checkpoints of the runs of
# finetune.runs, fine-tuned ImageNet-style (classification) and jointly on several tasks, then
# patched (patching): one job per (checkpoint, protocol), resumable from its state.pt. Their rows
# join the results table (aggregate_results).
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
        protocol="classification|patching",
    priority: cs_resources.priority(config, "finetune")
    threads: cs_resources.threads(config, "finetune")
    resources:
        **cs_resources.resources(config, "finetune"),
    params:
        # what shapes the result besides the checkpoint (a change reruns the job)
        shaping=lambda wc: shaping.finetune(config, wc.protocol, wc.model, wc.scale),
    script:
        "../scripts/finetune.py"
