"""Every rule's resources in one place: threads, memory, walltime, GPUs, tasks, MPI.

The names are those snakemake-executor-plugin-slurm reads (checked in its source, version
2.6.1): ``runtime`` (minutes, sbatch -t), ``mem_mb`` (--mem), ``gpu`` (--gpus; not ``gpus``,
which it ignores), ``tasks`` (--ntasks), ``tasks_per_gpu`` (--ntasks-per-gpu; it defaults to
``tasks`` when a job has GPUs), ``cpus_per_task`` (--cpus-per-task), ``nodes`` (--nodes) and
``mpi`` (set only for multi-task jobs: with fewer than 2 tasks the plugin raises inside its
submission thread and the run waits forever) and ``slurm_extra`` (further sbatch options: a
training job's walltime warning ``--signal=USR1@<train.signal_lead_s>`` and ``--requeue``; a
profile's ``set-resources: train: slurm_extra`` replaces it, so repeat them there). Snakemake's ``threads`` also bound local runs.

``of(config, rule, **sizes)`` gives a rule's resources: plain values, or functions of the
wildcards where a job's size depends on them (a training run's shape, a hash job's shard count).
The rules take theirs with ``threads: cs_resources.threads(config, rule)`` and ``resources:
**cs_resources.resources(config, rule)``; tests/test_resources.py checks the sbatch command of a training job and of an
evaluation job, with and without GPUs.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Mapping

from clipscale import grid

# CPU-only rules of a fixed size: threads, mem_mb, runtime (minutes)
FIXED: dict[str, tuple[int, int, int]] = {
    "make_world": (2, 2000, 30),  # the pool's shards in 2 processes (on the critical path)
    "subset": (1, 1000, 60),
    "dedup_hash_downstream": (1, 1000, 60),
    "dedup_overlap": (1, 2000, 10),
    "dedup_contact_sheet": (1, 2000, 30),
    "dedup_planted_recall": (1, 2000, 10),
    "model_profile": (1, 2000, 10),
    "aggregate_results": (1, 2000, 10),
    "aggregate_finetune": (1, 2000, 10),  # a table of a few result files
    "published_table": (1, 1000, 5),
    "fit_input": (1, 2000, 30),
    "fit_collect": (1, 1000, 5),
    "fit_extrapolation": (1, 2000, 30),
    "fit_comparison": (1, 2000, 15),
    "fit_bin_winners": (1, 1000, 5),
    "fit_compute_optimal": (1, 2000, 10),  # 200 refits per task: seconds
    "figure_compute": (1, 2000, 15),
    "figure_data_bottleneck": (1, 2000, 10),
    "figure_samples_bottleneck": (1, 2000, 10),
    "figure_overlap": (1, 1000, 5),
    "figure_training_curves": (1, 2000, 10),
    "figure_learning_curves": (1, 2000, 10),
}


def _fixed(rule: str) -> dict:
    threads, mem_mb, runtime = FIXED[rule]
    return {"threads": threads, "mem_mb": mem_mb, "runtime": runtime}


# what a training job needs from sbatch besides its shape: the walltime warning (clipscale.train
# saves its place and requeues the job: a run spans as many walltime windows as it needs), leave to
# requeue where a site's default is not to, and one Slurm log across windows (a requeued job
# truncates its --output file without --open-mode=append)
TRAIN_SBATCH = ("--signal=USR1@{lead}", "--requeue", "--open-mode=append")


def train_sbatch(lead_s: int) -> str:
    return " ".join(opt.format(lead=lead_s) for opt in TRAIN_SBATCH)


def site_slurm_extra_problems(overwrite: Mapping, config: Mapping) -> list[str]:
    """A profile's ``set-resources: train[_segment]: slurm_extra`` replaces the pipeline's (the
    plugin has no way to add to it): one problem per rule whose value lacks one of the options a
    training job needs (TRAIN_SBATCH, with every walltime-warning lead of the grid's runs)."""
    leads = sorted({grid.hparams(dict(config), run)["signal_lead_s"] for run in grid.runs(dict(config))})
    problems = []
    for rule in ("train", "train_segment"):
        value = (overwrite.get(rule) or {}).get("slurm_extra")
        value = getattr(value, "raw", value)  # snakemake's Resource: the text as given
        if value is None:
            continue
        text = str(value).strip().strip("'\"")
        need = [opt for lead in leads for opt in train_sbatch(lead).split() if opt not in text.split()]
        if need:
            problems.append(
                f"set-resources: {rule}: slurm_extra ({text!r}, from the profile or --set-resources) replaces "
                f"the pipeline's sbatch options for training jobs; add {' '.join(dict.fromkeys(need))} to it "
                f"(the walltime warning at train.signal_lead_s, requeue and one appended log per run: without "
                f"them every window ends in TIMEOUT), e.g. slurm_extra: \"'{text} {train_sbatch(leads[0])}'\"")
    return problems


def gres(gpus_per_node: int) -> dict:
    """GPUs per node (sbatch --gres=gpu:G): --gpus is a total that Slurm may spread unevenly
    across the nodes, and the plugin pairs it with --ntasks-per-gpu, which an srun
    --ntasks-per-node inside the job refuses ("mutually exclusive"). tasks_per_gpu 0 keeps the
    plugin from adding --ntasks-per-gpu."""
    return {"gres": f"gpu:{gpus_per_node}", "tasks_per_gpu": 0} if gpus_per_node else {}


def train(config: Mapping, run: grid.Run) -> dict:
    """One training run's job, in the shape open_clip documents for Slurm: ``--nodes=N
    --ntasks-per-node=P --gres=gpu:G --cpus-per-task=C`` (P = ``train.nproc`` processes per
    node, one per GPU; G = ``train.gpus_per_node``; C = ``train.threads``), ``--mem`` per node;
    multi-task jobs carry ``mpi="srun"`` (clipscale.launch starts the P x N ranks with srun
    inside the job). The plugin takes ``tasks_per_node`` (> 1) or ``tasks``, not both: one
    process per node on several nodes is ``--nodes=N --ntasks=N``."""
    hp = grid.hparams(dict(config), run)
    nodes, world, per_node = hp["nodes"], hp["world_size"], hp["nproc"]
    out = {
        "threads": hp["threads"] * per_node,
        "mem_mb": hp["mem_mb"],
        "runtime": hp["runtime"],
        "nodes": nodes,
        "cpus_per_task": hp["threads"],
        "mpi": "srun" if world > 1 else "",
        "slurm_extra": train_sbatch(hp["signal_lead_s"]),
        **gres(hp["gpus_per_node"]),
    }
    if per_node > 1:
        out["tasks_per_node"] = per_node
    else:
        out["tasks"] = world
    return out


# training throughput, in forward GMAC x samples per second per process (the paper's compute
# axis): on a GPU the paper's own runs (ViT-L/14, 34B samples of LAION-80M in 90,647 A100-hours,
# Table 18: 9,095 per GPU); on a CPU what the embedded default measured here (3,817 GMAC x samples
# in 1,740 CPU-s: 2.2 per core). For sizing retries, never for results.
GPU_TRAIN_GMAC_PER_S = 9_000
CPU_TRAIN_GMAC_PER_S_PER_THREAD = 2.0


def expected_windows(config: Mapping, run: grid.Run) -> int:
    """Walltime windows a run's job is expected to need (with a margin of 1.5): its training
    compute at the rate above over ``train.runtime`` minutes less the warning's lead."""
    from clipscale import models

    hp = grid.hparams(dict(config), run)
    rate = GPU_TRAIN_GMAC_PER_S if hp["gpus_per_node"] else CPU_TRAIN_GMAC_PER_S_PER_THREAD * hp["threads"]
    seconds = hp["samples_trained_exact"] * models.estimated_gmac(config, run.model) / (rate * hp["world_size"])
    window = max(60, hp["runtime"] * 60 - hp["signal_lead_s"])
    return max(1, math.ceil(1.5 * seconds / window))


def train_retries(config: Mapping) -> int:
    """Snakemake's retries of a training job on a cluster: one, or the most windows a run of the
    grid is expected to need, whichever is more. A job that can requeue itself spans its windows
    in one Slurm job; where a site does not allow requeue (clipscale.train checks at the start
    of every job) each window ends the job cleanly and Snakemake's retry starts the next. A job
    that fails without training a step twice in a row is not started a third time
    (clipscale.train.refuse_hopeless), so retries are not spent on a run that cannot start."""
    return max([1, *(expected_windows(config, run) for run in grid.runs(dict(config)))])


def finetune(config: Mapping) -> dict:
    """One fine-tuning job (a checkpoint, a protocol), in training's shape: ``finetune.nproc``
    processes per node (one per GPU) on ``finetune.nodes`` nodes, ``finetune.gpus_per_node`` GPUs
    (--gres) and ``finetune.threads`` CPUs per process, ``finetune.mem_mb`` per node; multi-task
    jobs carry ``mpi="srun"`` (clipscale.finetune.job.run_job starts the ranks inside the job)."""
    ft = config["finetune"]
    nodes, per_node = ft["nodes"], ft["nproc"]
    out = {"threads": ft["threads"] * per_node, "mem_mb": ft["mem_mb"], "runtime": ft["runtime"],
           "nodes": nodes, "cpus_per_task": ft["threads"], "mpi": "srun" if nodes * per_node > 1 else "",
           **gres(ft["gpus_per_node"])}
    if per_node > 1:
        out["tasks_per_node"] = per_node
    else:
        out["tasks"] = nodes
    return out


# Encoding images for evaluation (benchmarks/bench_eval_rate.py, on the 2-core dev machine shared
# with other work, 2026-12-03): ViT-B-32's image tower ran at 17 GMAC/s on one thread (fp32);
# a 500x375 JPEG decoded and transformed to 224 px in 5.6 ms in one process (1.0 ms for the
# world's 32 px images); the world's vit-s took 0.34 ms per image whatever its GMAC.
CPU_EVAL_GMAC_PER_S_PER_THREAD = 17
DECODE_S_PER_IMAGE = 0.0056
DECODE_S_PER_TINY_IMAGE = 0.001
PER_IMAGE_S = 0.0004
# GPUs: an ASSUMPTION, not a measurement (no GPU was lent to the session that wrote this):
# 50,000 GMAC/s in bf16 on one A100/H100-class GPU (about a third of an A100's 156 TMAC/s
# peak: ViT-L/14 at ~620 images/s), a fifth of it in fp32 (evaluate.amp false). Replace both by
# a device measurement (bench_eval_rate.py's encoding on the GPU).
GPU_EVAL_GMAC_PER_S = 50_000
GPU_EVAL_GMAC_PER_S_FP32 = 10_000
# a job's start (python, torch, clip_benchmark, the model built), per set (its shards opened,
# its classifier built), the checkpoint read at 200 MB/s; a margin of 2 over the estimate
EVAL_START_S = 120
EVAL_SET_S = 15
CHECKPOINT_READ_MB_S = 200
EVAL_MARGIN = 2
EVAL_MIN_RUNTIME = 10  # minutes


def _eval_device(config: Mapping, setting: str) -> tuple[int, bool]:
    """(GPUs, amp) of an encoding job: a GPU where ``setting`` is cuda, or auto with
    evaluate.gpus > 0 (evaluate.gpus GPUs for an evaluation job, one for an encoding job)."""
    gpus = config["evaluate"].get("gpus") or 0
    on_gpu = setting == "cuda" or (setting == "auto" and gpus > 0)
    return (max(1, gpus) if on_gpu else 0), on_gpu and bool(config["evaluate"].get("amp", True))


def encoding_seconds(images: int, tiny_images: int, image_gmac: float, texts: int, text_gmac: float,
                     gpu: bool, amp: bool, threads: int, workers: int) -> float:
    """Seconds to encode ``images`` (``tiny_images`` of them the world's 32 px) and ``texts``:
    decoding in ``workers`` processes (or in the job's process with 0), the towers' GMAC on one
    GPU or on ``threads`` CPU threads. Decoding and encoding are added, not overlapped."""
    rate = (GPU_EVAL_GMAC_PER_S if amp else GPU_EVAL_GMAC_PER_S_FP32) if gpu \
        else CPU_EVAL_GMAC_PER_S_PER_THREAD * threads
    decode = (images - tiny_images) * DECODE_S_PER_IMAGE + tiny_images * DECODE_S_PER_TINY_IMAGE
    overhead = 0 if gpu else PER_IMAGE_S  # a tiny model's floor on a CPU
    return decode / max(1, workers) + images * (overhead + image_gmac / rate) + texts * text_gmac / rate


def _eval_mem_mb(towers, batch_size: int, workers: int, features: int, gpu: bool) -> int:
    """Host memory (MB) of an encoding job, x 1.5 in steps of 500 MB: the libraries (torch,
    clip_benchmark: 1.5 GB, 3 GB with CUDA; the world's evaluation peaked at 0.9 GB), the
    checkpoint and the model (2 x params, fp32), the features held at once (and their copy
    when they are concatenated), the batches in flight (2 prefetched per worker) and 500 MB
    per worker process."""
    batch_mb = batch_size * 3 * towers.image_size ** 2 * 4 / 1e6
    mb = ((3000 if gpu else 1500) + 2 * towers.params * 4 / 1e6 + 2 * features * towers.embed_dim * 4 / 1e6
          + batch_mb * (2 + 2 * workers) + 500 * workers)
    return int(math.ceil(1.5 * mb / 500) * 500)


def _minutes(seconds: float, attempt: int) -> int:
    return max(EVAL_MIN_RUNTIME, math.ceil(EVAL_MARGIN * seconds / 60)) * attempt


def evaluate(config: Mapping) -> dict:
    """One checkpoint's evaluation job: ``evaluate.threads`` CPU threads plus one CPU per
    data-loading worker (``evaluate.workers``), ``evaluate.gpus`` GPUs on one node (--gres);
    walltime and memory from the job's work (clipscale.evaluate.work: the images and texts of
    every configured set, x the model's GMAC per image and per text, estimated from its
    definition, clipscale.models.towers), at the rates above, plus start-up, x EVAL_MARGIN;
    each retry (Snakemake's ``attempt``, after a TIMEOUT or an out-of-memory kill) asks for
    attempt x the walltime and half as much memory again per attempt. ``evaluate.runtime`` /
    ``evaluate.mem_mb``, where set, replace the estimates of the first attempt."""
    from clipscale import models
    from clipscale.evaluate.work import evaluation_work

    ev = config["evaluate"]
    gpus, amp = _eval_device(config, ev.get("device", "auto"))
    workers = ev.get("workers", 0)

    def runtime(wildcards, attempt=1, **_):
        if ev.get("runtime"):
            return ev["runtime"] * attempt
        t, work = models.towers(config, wildcards.model), evaluation_work(dict(config))
        seconds = (EVAL_START_S + EVAL_SET_S * work.sets + 4 * t.params / 1e6 / CHECKPOINT_READ_MB_S
                   + encoding_seconds(work.images, work.tiny_images, t.image_gmac, work.texts, t.text_gmac,
                                      gpus > 0, amp, ev["threads"], workers)
                   + work.probe_macs * t.embed_dim / (CPU_EVAL_GMAC_PER_S_PER_THREAD * ev["threads"]
                                                      if not gpus else GPU_EVAL_GMAC_PER_S_FP32))
        return _minutes(seconds, attempt)

    def mem_mb(wildcards, attempt=1, **_):
        base = ev.get("mem_mb") or _eval_mem_mb(models.towers(config, wildcards.model), ev["batch_size"],
                                                workers, evaluation_work(dict(config)).largest_features, gpus > 0)
        return base + base * (attempt - 1) // 2

    return {"threads": ev["threads"], "mem_mb": mem_mb, "runtime": runtime,
            "cpus_per_task": ev["threads"] + workers, **gres(gpus)}


# the pool's work: a LAION shard holds ~10,000 samples; the index scans tar headers at ~45,000
# samples/s per process, pHash runs at ~500 images/s per process (benchmarks/bench_dedup.py: 580)
SAMPLES_PER_SHARD = 10_000
INDEX_RATE = 45_000
HASH_RATE = 500


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def index_pool(n_shards: int) -> dict:
    """The pool index: a process per 1,000 shards, up to 8 (1 for the embedded world), and a
    walltime for that with a margin of 2."""
    threads = max(1, min(8, _ceil_div(n_shards, 1000)))
    minutes = 2 * n_shards * SAMPLES_PER_SHARD // (INDEX_RATE * threads * 60)
    # finding repeated keys across the pool sorts 8-byte digests of every key: about 30 bytes
    # per sample at the peak (clipscale.subsets), 60 GB for LAION-2B
    keys_mb = _ceil_div(30 * n_shards * SAMPLES_PER_SHARD, 1_000_000)
    return {"threads": threads, "mem_mb": 900 + 100 * threads + keys_mb, "runtime": max(60, minutes)}


def dedup_hash_pool(shards_per_job: int, n_shards: int) -> dict:
    """A pool hash job: a process per 25 shards of its group (~6 min of hashing LAION shards),
    up to 8 (1 for the embedded world); its walltime from its group's size (a function of the
    wildcards: the last group may be smaller), margin 2."""
    threads = max(1, min(8, _ceil_div(min(shards_per_job, n_shards), 25)))

    def runtime(wildcards, group_sizes: Mapping[str, int] | None = None, **_):
        n = group_sizes[wildcards.group] if group_sizes else shards_per_job
        return max(10, 2 * n * SAMPLES_PER_SHARD // (HASH_RATE * threads * 60))

    return {"threads": threads, "mem_mb": 750 + 250 * threads, "runtime": runtime}


def _pool_stream(n_shards: int, mem_mb: int, per_minute: int) -> dict:
    """A job streaming the whole pool's hashes (gather, match) or copying its shards (filter)."""
    return {"threads": 1, "mem_mb": mem_mb, "runtime": max(10, n_shards // per_minute)}


def of(config: Mapping, rule: str, pool_shards: int = 0, group_sizes: Mapping[str, int] | None = None) -> dict[str, Any]:
    """A rule's threads and resources: values, or functions of the job's wildcards.
    ``pool_shards`` (how many shards the pool has) sizes the rules that read the whole pool;
    ``group_sizes`` (group -> shards) the pool hash jobs."""
    if rule in ("train", "train_segment"):
        return per_run(config)
    if rule == "evaluate":
        return evaluate(config)
    if rule == "finetune":
        return finetune(config)
    if rule == "index_pool":
        return index_pool(pool_shards)
    if rule == "dedup_hash_pool":
        out = dedup_hash_pool(config["dedup"]["shards_per_job"], pool_shards)
        runtime = out["runtime"]
        out["runtime"] = lambda wildcards, **_: runtime(wildcards, group_sizes)
        return out
    if rule in ("dedup_gather", "dedup_match"):
        return _pool_stream(pool_shards, 1000 if rule == "dedup_gather" else 4000, 1000)
    if rule == "dedup_filter_subset":
        return _pool_stream(pool_shards, 2000, 10)
    if rule in ("dedup_embed_pool", "dedup_embed_downstream"):
        return dedup_embed(config, rule, group_sizes)
    if rule == "dedup_match_embedding":
        return _pool_stream(pool_shards, 4000, 1000)
    return _fixed(rule)


def dedup_embed(config: Mapping, rule: str, group_sizes: Mapping[str, int] | None = None) -> dict:
    """A job encoding images for mode embedding: a GPU when dedup.embedding.device is cuda (or
    auto, with evaluate.gpus > 0: where the evaluations get one), the evaluation's threads;
    walltime and memory from its images (a pool group's shards x samples per shard, or a test
    set's test split) x the encoder's GMAC per image, as an evaluation's (decoding in the job's
    process), x ``attempt`` for the walltime of a retry."""
    emb = config["dedup"]["embedding"]
    gpus, _ = _eval_device(config, emb["device"])
    gpus = min(gpus, 1)
    threads = config["evaluate"]["threads"]
    pool = config.get("pool", {})
    per_shard = (config.get("world", {}).get("shard_size", 2000) if pool.get("source") == "world"
                 else SAMPLES_PER_SHARD)

    def images(wildcards) -> tuple[int, int]:
        """(images, of which the world's 32 px) of the job."""
        if rule == "dedup_embed_pool":
            shards = (group_sizes or {}).get(wildcards.group, config["dedup"]["shards_per_job"])
            n = shards * per_shard
            return n, n if pool.get("source") == "world" else 0
        from clipscale.evaluate.work import set_size

        size = set_size(dict(config), wildcards.dataset)
        return size.test, size.test if size.source == "world" else 0

    def encoder_towers():
        from clipscale import models
        from clipscale.dedup.embedding import encoder

        try:
            return models.towers(config, encoder(config)["model"])
        except Exception:  # no encoder to name (the DAG reports it): the grid's last model
            return models.towers(config, config["grid"]["models"][-1])

    def runtime(wildcards, attempt=1, **_):
        n, tiny = images(wildcards)
        t = encoder_towers()
        seconds = EVAL_START_S + 4 * t.params / 1e6 / CHECKPOINT_READ_MB_S + encoding_seconds(
            n, tiny, t.image_gmac, 0, 0.0, gpus > 0, False, threads, 0)
        return _minutes(seconds, attempt)

    def mem_mb(wildcards, attempt=1, **_):
        base = _eval_mem_mb(encoder_towers(), emb["batch_size"], 0, images(wildcards)[0] // 2, gpus > 0)  # float16
        return base + base * (attempt - 1) // 2

    return {"threads": threads, "mem_mb": mem_mb, "runtime": runtime, "cpus_per_task": threads, **gres(gpus)}


def per_run(config: Mapping) -> dict[str, Callable]:
    """The resources of the train and train_segment rules, each a function of the job's
    wildcards (model, scale, samples), plus ``threads``."""
    # every run of the grid has the same keys (a resource cannot be absent for some jobs only)
    keys = set().union(*(train(config, run) for run in grid.runs(dict(config)))) or {"threads"}
    default = {"gres": "", "tasks_per_gpu": 0, "tasks": 0, "tasks_per_node": 0}

    def getter(key):
        return lambda wildcards, **_: train(config, grid.Run.from_wildcards(
            wildcards.model, wildcards.scale, wildcards.samples)).get(key, default.get(key))

    return {key: getter(key) for key in sorted(keys)}


def threads(config: Mapping, rule: str, **sizes):
    """A rule's ``threads:`` (a value, or a function of the wildcards)."""
    return of(config, rule, **sizes)["threads"]


def resources(config: Mapping, rule: str, **sizes) -> dict[str, Any]:
    """A rule's ``resources:`` (everything but threads)."""
    return {k: v for k, v in of(config, rule, **sizes).items() if k != "threads"}


# ---------------------------------------------------------------------------------------------
# Scheduling: each rule's ``priority:``. Snakemake starts, among the jobs whose inputs are
# ready, those of the highest priority first (ilp and greedy schedulers alike); it does not pass
# a priority on to a job's inputs, so each rule has its own. Measured on the embedded default
# with none (every job 0, 2026-12-02): the scheduler then prefers jobs with large inputs, and a
# one-second subset job that three training runs waited for ran 10 minutes after its index.
#
# The tiers follow the longest chains of work first, so that what is left at the end is short
# jobs that keep every core busy and the short chain from the last checkpoint to the figures:
#   DATA     the world, the pool index, the subsets, the models' profiles (and, when training
#            reads deduplicated subsets, the dedup chain): every training run waits for them;
#   INDEPENDENT  what needs no training (the paper's numbers: their table, fits, analyses and
#            figures; dedup): done early, filling the cores while the first runs train, instead
#            of piling up at the end;
#   TRAIN    training jobs, the one that starts the longest remaining chain first (a
#            const-cooldown trunk's segment carries the rest of its trunk): TRAIN + log10 of
#            that chain's compute (GMAC, estimated from the model's definition);
#   then fine-tuning, evaluations, the results table, our fits and our figures, in the order of
#   the chain from a checkpoint to a figure.
DATA, INDEPENDENT, TRAIN = 1000, 500, 100
FINETUNE, AGGREGATE, EVALUATE, FIT_OURS_TABLE, FIT_OURS, FIGURE_OURS = 95, 60, 50, 45, 40, 30
_DATA_RULES = ("make_world", "index_pool", "subset", "model_profile")
_FIT_RULES = ("fit_input", "fit_extrapolation", "fit_comparison", "fit_bin_winners", "fit_compute_optimal")
_FIGURE_RULES = ("figure_compute", "figure_data_bottleneck", "figure_samples_bottleneck", "figure_overlap")
_ENCODER_RULES = ("dedup_embed_pool", "dedup_embed_downstream", "dedup_match_embedding")


def train_chain_gmac(config: Mapping, run: grid.Run, start_epoch: int) -> float:
    """GMAC of the training that waits on a job of ``run`` starting at ``start_epoch``: the rest
    of the run (a trunk's later segments included), at the model's estimated GMAC per sample."""
    from clipscale import models

    hp = grid.hparams(dict(config), run)
    per_epoch = hp["samples_seen_exact"] // hp["epochs"]  # grid's exact samples per virtual epoch
    return (hp["epochs"] - start_epoch) * per_epoch * models.estimated_gmac(config, run.model)


def _job_start(config: Mapping, run: grid.Run, until: int | None) -> int:
    """The epoch a training job starts at: the end of the run's segment before it, else a
    branch's trunk checkpoint, else 0."""
    ends = [e for e in grid.segment_ends(dict(config), run) if until is None or e < until]
    if ends:
        return ends[-1]
    return grid.hparams(dict(config), run).get("branch_epoch") or 0


def priority(config: Mapping, rule: str, figures: Mapping | None = None):
    """A rule's ``priority:``: a number, or a function of the job's wildcards. ``figures``
    (name -> a spec with ``kind`` and ``inputs``) tells a figure that reads our runs' results
    from one that does not (the paper's numbers, the dedup overlap)."""
    import math

    removing = bool(config.get("dedup", {}).get("remove_duplicates"))
    if rule in _DATA_RULES or (removing and rule.startswith("dedup_")):
        return DATA
    if rule in ("train", "train_segment"):
        def train_priority(wildcards, **_):
            run = grid.Run.from_wildcards(wildcards.model, wildcards.scale, wildcards.samples)
            until = int(wildcards.epoch) if "epoch" in wildcards.keys() else None
            chain = train_chain_gmac(config, run, _job_start(config, run, until))
            return TRAIN + math.log10(1 + chain)
        return train_priority
    if rule == "finetune":
        return FINETUNE
    if rule == "evaluate":
        return EVALUATE
    if rule in ("aggregate_results", "aggregate_finetune", "fit_collect"):
        return FIT_OURS if rule == "fit_collect" else AGGREGATE
    if rule in _FIT_RULES:
        mine = FIT_OURS_TABLE if rule == "fit_input" else FIT_OURS
        return lambda wildcards, **_: mine if wildcards.input == "ours" else INDEPENDENT
    if rule in _FIGURE_RULES:
        def figure_priority(wildcards, **_):
            spec = (figures or {}).get(wildcards.figure)
            if spec is None or (spec.kind != "overlap" and "ours" in spec.inputs):
                return FIGURE_OURS
            return INDEPENDENT
        return figure_priority
    if rule in ("figure_training_curves", "figure_learning_curves"):  # our runs' curves
        return FIGURE_OURS
    if rule in _ENCODER_RULES:  # the encoder may be one of the grid's runs
        return 0
    return INDEPENDENT  # published_table, dedup
