# 3. train: one open_clip run per (model, data scale, samples seen) of the grid, in
# train.segments jobs (train_segment for all but the last). Only records are outputs (run.json,
# segments/epoch_N.json): checkpoints stay in the run folder when a job fails, is killed or
# reaches its walltime, and the next attempt resumes from the latest one (clipscale.resume).


from clipscale import resources as cs_resources


include: "train_functions.smk"


rule model_profile:
    output:
        paths.MODEL_PROFILE,
    log:
        log_path("model_profile", "{model}"),
    benchmark:
        bench_path("model_profile", "{model}")
    priority: cs_resources.priority(config, "model_profile")
    threads: cs_resources.threads(config, "model_profile")
    resources:
        **cs_resources.resources(config, "model_profile"),
    params:
        settings=lambda wc: shaping.model(config, wc.model),
    script:
        "../scripts/model_profile.py"


rule train_segment:
    # with train.segments > 1: the jobs of a run before its last, each resuming the one before
    # and ending with checkpoint {epoch}; its record lets that checkpoint be evaluated now
    input:
        manifest=train_manifest,
        profile=model_profile,
        previous=previous_segment,
    output:
        paths.RUN_SEGMENT,
    log:
        log_path("train", "{model}", "{scale}", "{samples}", "epoch_{epoch}"),
    benchmark:
        bench_path("train", "{model}", "{scale}", "{samples}", "epoch_{epoch}")
    wildcard_constraints:
        epoch="[0-9]+",
    priority: cs_resources.priority(config, "train_segment")
    threads: cs_resources.threads(config, "train_segment")
    resources:
        **cs_resources.resources(config, "train_segment"),
        attempt=lambda wildcards, attempt: attempt,
    params:
        shaping=lambda wc: shaping.train(
            config, grid.Run.from_wildcards(wc.model, wc.scale, wc.samples)
        ),
    script:
        "../scripts/train.py"


rule train:
    input:
        manifest=train_manifest,
        profile=model_profile,
        previous=previous_segment,
    output:
        paths.RUN_DONE,
    log:
        log_path("train", "{model}", "{scale}", "{samples}"),
    benchmark:
        bench_path("train", "{model}", "{scale}", "{samples}")
    priority: cs_resources.priority(config, "train")
    # retries: on a cluster, set at onstart (common.smk): the runs' expected walltime windows
    threads: cs_resources.threads(config, "train")
    resources:
        # nodes, tasks (= train.nproc x nodes), cpus_per_task, gpu (the plugin reads "gpu",
        # not "gpus"), tasks_per_gpu, mpi="srun" for multi-task jobs: clipscale.resources.train
        **cs_resources.resources(config, "train"),
        attempt=lambda wildcards, attempt: attempt,
    params:
        # what shapes the run (a change reruns it); threads, workers, nproc... do not
        shaping=lambda wc: shaping.train(config, grid.Run.from_wildcards(**wc)),
    script:
        "../scripts/train.py"
