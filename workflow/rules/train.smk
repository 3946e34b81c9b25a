# 3. train: one open_clip run per (model, data scale, samples seen) of the grid.
# Only run.json is an output: checkpoints stay in the run folder when a job fails, is killed or
# hits its walltime, and the next attempt resumes from the latest one.


include: "train_functions.smk"


rule model_profile:
    output:
        paths.MODEL_PROFILE,
    log:
        log_path("model_profile", "{model}"),
    benchmark:
        bench_path("model_profile", "{model}")
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
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
    threads: lambda wc: train_hparams(wc)["threads"] * train_hparams(wc)["nproc"]
    resources:
        mem_mb=lambda wc: train_hparams(wc)["mem_mb"],
        runtime=lambda wc: train_hparams(wc)["runtime"],
        nodes=lambda wc: train_hparams(wc)["nodes"],
        tasks=lambda wc: train_hparams(wc)["world_size"],
        cpus_per_task=lambda wc: train_hparams(wc)["threads"],
        # the slurm plugin reads "gpu" (not "gpus"); one rank per GPU
        gpu=lambda wc: train_hparams(wc)["gpus_per_node"] * train_hparams(wc)["nodes"],
        tasks_per_gpu=lambda wc: (
            train_hparams(wc)["nproc"] // train_hparams(wc)["gpus_per_node"]
            if train_hparams(wc)["gpus_per_node"]
            else 0
        ),
        # srun starts the ranks inside the job; the plugin refuses mpi for a single task
        mpi=lambda wc: "srun" if train_hparams(wc)["world_size"] > 1 else "",
    params:
        # what shapes the run (a change reruns it); threads, workers, nproc... do not
        shaping=lambda wc: shaping.train(config, grid.Run.from_wildcards(**wc)),
    script:
        "../scripts/train.py"
