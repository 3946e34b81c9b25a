# 3. train: one open_clip run per (model, data scale, samples seen) of the grid.
# Only run.json is an output: checkpoints stay in the run folder when a job fails, is killed or
# hits its walltime, and the next attempt resumes from the latest one.


from clipscale import resources as cs_resources


include: "train_functions.smk"


rule model_profile:
    output:
        paths.MODEL_PROFILE,
    log:
        log_path("model_profile", "{model}"),
    benchmark:
        bench_path("model_profile", "{model}")
    threads: cs_resources.threads(config, "model_profile")
    resources:
        **cs_resources.resources(config, "model_profile"),
    params:
        settings=lambda wc: shaping.model(config, wc.model),
    script:
        "../scripts/model_profile.py"


rule train:
    input:
        manifest=train_manifest,
        profile=model_profile,
    output:
        paths.RUN_DONE,
    log:
        log_path("train", "{model}", "{scale}", "{samples}"),
    benchmark:
        bench_path("train", "{model}", "{scale}", "{samples}")
    threads: cs_resources.threads(config, "train")
    resources:
        # nodes, tasks (= train.nproc x nodes), cpus_per_task, gpu (the plugin reads "gpu",
        # not "gpus"), tasks_per_gpu, mpi="srun" for multi-task jobs: clipscale.resources.train
        **cs_resources.resources(config, "train"),
    params:
        # what shapes the run (a change reruns it); threads, workers, nproc... do not
        shaping=lambda wc: shaping.train(config, grid.Run.from_wildcards(**wc)),
    script:
        "../scripts/train.py"
