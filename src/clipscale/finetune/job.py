"""One fine-tuning job: a checkpoint and a protocol (the paper's Sec. 4.4, supplement B.2.2).

* ``classification`` (ImageNet-style, the paper's Table 9): the image encoder and a head
  initialised from the zero-shot classifier are fine-tuned on the main set's train split with the
  recipe (``clipscale.finetune.recipe``), then evaluated (the EMA weights when the recipe keeps an
  EMA) on its test split and its robustness sets with its head (restricted to a set's classes
  when it holds a subset of them: ImageNet-A, -R; a test sample with a ``labels.json`` list,
  ImageNet-ReaL's, is right when the top class is in it). Rows: task ``finetune``, metric
  ``imagenet_ft_acc1``, as the paper's Table 9.
* ``classification_in12k``: the same after an intermediate step (``finetune.intermediate``, the
  paper's ImageNet-12k with Table 11's recipe; its own saved place ``state_intermediate.pt``)
  whose EMA encoder the ImageNet step starts from; metric ``imagenet_ft_acc1_in12k``.
* ``classification_hires``, ``classification_in12k_hires``: the two at a larger image size
  (``finetune.classification.high_res``, per model: Table 9's 384 px for ViT-B, 336 px for
  ViT-L/H), the model made for that size and its position embeddings interpolated (the
  intermediate step at the checkpoint's size); metrics ``imagenet_ft_acc1_<size>px[_in12k]``.
* ``patching`` (the paper's Tables 7-8, after Ilharco et al. 2022): the image encoder is
  fine-tuned jointly on several tasks, one task's batch per step in turn, each task's head fixed
  to its zero-shot classifier; then theta = (1 - a) theta_zero-shot + a theta_fine-tuned for a in
  0, 0.1, ..., 1, and the a that maximises the tasks' mean accuracy while the control task (the
  main set, ImageNet in the paper) stays within ``control_tolerance`` points of the zero-shot
  model. As Ilharco et al., a is chosen on validation splits carved from the train splits
  (``finetune.patching.validation``: 10%, at most 5,000 samples, drawn from the seed; the joint
  fine-tuning trains on the rest), and the test splits are evaluated at a = 0, the chosen a and
  1 (fraction 0: a chosen on the test splits). Rows per task and the control:
  ``patching``/``zeroshot_acc1`` (a = 0), ``finetune``/``ft_acc1`` (a = 1),
  ``patching``/``patched_acc1`` (the chosen a); the whole sweep is in the result file.

Data parallel: the job's processes (``finetune.nproc`` per node on ``finetune.nodes`` nodes,
started by ``launch`` as training starts its ranks: torchrun on one node, srun across nodes) each
run a share of every step's batch, in micro-batches of at most ``finetune.micro_batch_size``
(gradient accumulation), under bf16 autocast on GPUs (``finetune.precision``). It is the same
optimisation as one batch of ``recipe.batch_size`` in one process, up to floating point: every
process reads the same stream of undecoded samples and decodes its own contiguous share of each
batch; each sample is augmented with a random state of its own (from the seed, the step and its
place in the batch), so which process augments it does not matter; each micro-batch's mean loss
is weighted by its share of the whole batch before DDP averages the gradients. Only stochastic
depth draws per process (the same in distribution). The test splits are evaluated shard by shard
across the processes, their counts summed.

Resumable: the job saves its place (weights, EMA, optimizer, step) to ``state.pt`` beside its
result every ``save_minutes``, at the end of training and when SIGTERM or the walltime warning
SIGUSR1 arrives; a restarted job continues from there (the data stream is reseeded by the step,
so a resumed run sees other batches than an uninterrupted one would, not the same ones again).
A state made with other settings or from another checkpoint file is not resumed. Corrupt
images are skipped, counted and reported in the result.

Modules of the job, by role: ``data`` (a task's shards, splits, batches and seeded decoding),
``loop`` (the training loop: micro-batches, the Trainer, its saved place), ``evaluation``
(heads, accuracy, the protocols' runs and patching's sweep) and this one (the job: its result
file, its processes, ``main``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import json
import logging
import os
import time
from pathlib import Path
from typing import Mapping

from clipscale import files
from clipscale.config import ConfigError
from clipscale.finetune import recipe as rc
from clipscale.finetune.data import FinetuneError, Ranks, TaskData, validation_split
from clipscale.finetune.evaluation import Loaded, run_classification, run_intermediate, run_patching
from clipscale.finetune.loop import fingerprint

# moved to modules by role; importable from here as before
from clipscale.finetune.data import Skipped, _train_batches  # noqa: F401
from clipscale.finetune.evaluation import accuracy, class_columns, held_out_samples  # noqa: F401

log = logging.getLogger("clipscale.finetune")


RESULT_FORMAT = 1
PROTOCOLS = ("classification", "classification_in12k", "classification_hires", "classification_in12k_hires",
             "patching")


def finetune_checkpoint(config: dict, model: str, scale: str, samples: str, protocol: str, output: str | Path, *,
                        run_record: str | Path | None = None, device: str | None = None,
                        threads: int | None = None) -> dict:
    """Fine-tune the final checkpoint of one of our runs with one protocol; write the result file
    (its table rows, the sweep, steps, skipped samples) to ``output``; its saved place is
    ``state.pt`` beside it, resumed only when made from the same checkpoint file with the same
    training settings (recipe, training sets, seed). In a process started by ``launch`` (several
    processes: torchrun's or srun's variables), this is one rank of the job: it joins the others'
    process group (NCCL on GPUs, gloo on CPUs) and rank 0 writes the files."""
    import torch

    from clipscale.evaluate.benchmark import resolve_device
    from clipscale.finetune import plan

    if protocol not in PROTOCOLS:
        raise ConfigError(f"finetune: unknown protocol {protocol!r} (expected one of {list(PROTOCOLS)})")
    ft = plan.section(config)
    torch.set_num_threads(threads or ft["threads"])
    device = device or resolve_device(ft["device"])
    output = Path(output)
    ranks, device = _join(config, device)
    try:
        return _finetune(config, model, scale, samples, protocol, output, run_record, device, ranks)
    finally:
        if ranks.world > 1:
            import torch.distributed as dist

            dist.destroy_process_group()


def _join(config: Mapping, device: str) -> tuple[Ranks, str]:
    """This process's place in the job (``clipscale.launch.dist_env``) and its device (its
    local rank's GPU); joins the job's process group when there are several processes."""
    import torch

    from clipscale import launch
    from clipscale.finetune import plan

    world = plan.world_size(config)
    bf16 = plan.bf16(config, device)
    if world == 1:
        return Ranks(device=device, bf16=bf16), device
    d = launch.apply_env()
    if d.world_size != world:
        raise FinetuneError(f"this process is one of {d.world_size} ({d.launcher}), but finetune.nproc x "
                            f"finetune.nodes is {world}: start the job with clipscale.finetune.launch")
    if device == "cuda":
        device = f"cuda:{d.local_rank}"
        torch.cuda.set_device(device)
    import torch.distributed as dist

    dist.init_process_group("nccl" if device.startswith("cuda") else "gloo", init_method="env://",
                            rank=d.rank, world_size=d.world_size)
    return Ranks(d.rank, d.world_size, device, bf16), device


def _finetune(config: dict, model: str, scale: str, samples: str, protocol: str, output: Path,
              run_record, device: str, ranks: Ranks) -> dict:
    from clipscale import grid, models
    from clipscale.evaluate.checkpoints import check_checkpoint, our_checkpoint, stamp, table_row
    from clipscale.finetune import plan

    ft = plan.section(config)
    run = grid.find_run(config, model, scale, samples)
    info = our_checkpoint(config, model, scale, samples, grid.hparams(config, run)["epochs"], run_record)
    check_checkpoint(info.path)
    recipe = rc.Recipe.of(plan.recipe_settings(config, protocol, model))
    sets = {name: TaskData(name, Path(plan.dataset_dir(config, name))) for name in plan.datasets(config, protocol)}
    seed = int(config.get("seed", 0))
    validation = ft["patching"]["validation"]
    if protocol == "patching" and validation["fraction"] > 0:  # Ilharco et al.'s validation splits
        for name in [*ft["patching"]["tasks"], ft["patching"]["control"]]:
            sets[name] = dataclasses.replace(sets[name], held_out=validation_split(
                sets[name], validation["fraction"], validation["max_samples"], seed))
    main = ft["classification"]["dataset"]
    trained_on = [main] if protocol.startswith("classification") else ft["patching"]["tasks"]
    settings = {"protocol": protocol, "recipe": plan.recipe_settings(config, protocol, model), "seed": seed,
                "train": {n: str(sets[n].root) for n in trained_on}}
    if protocol == "patching":
        settings["validation"] = validation if validation["fraction"] > 0 else None
    if plan.image_size(config, protocol, model):
        settings["image_size"] = plan.image_size(config, protocol, model)
    fp_intermediate = None
    if plan.with_intermediate(protocol):
        inter = ft["intermediate"]["dataset"]
        fp_intermediate = fingerprint({"protocol": "intermediate", "recipe": plan.intermediate_settings(config, model),
                                       "seed": seed, "train": {inter: str(sets[inter].root)}}, stamp(info.path))
        settings["intermediate"] = fp_intermediate
    fp = fingerprint(settings, stamp(info.path))
    models.register(config)
    t0 = time.time()
    size = plan.image_size(config, protocol, model)
    # the intermediate step runs at the checkpoint's size, the rest at the protocol's
    loaded = Loaded.load(info.model, info.path, device, image_size=None if plan.with_intermediate(protocol) else size)
    log.info("%s: %s fine-tuning of %s (%s) on %s", run.name, protocol, info.path, info.label, device)
    common = dict(device=device, seed=seed, state_path=output.parent / "state.pt", fp=fp,
                  save_minutes=ft["save_minutes"], ranks=ranks, micro_batch=plan.micro_batch_size(config, model))
    micro_hires = common["micro_batch"]
    if size and micro_hires:  # micro-batches sized at the checkpoint's size: as many pixels (tokens) at this one
        import open_clip

        native = open_clip.get_model_config(info.model)["vision_cfg"]["image_size"]
        native = native[0] if isinstance(native, (tuple, list)) else int(native)
        micro_hires = max(1, micro_hires * native * native // (size * size))
    if protocol.startswith("classification"):
        names = plan.datasets(config, "classification")
        extra, start = {}, None
        if plan.with_intermediate(protocol):  # at the checkpoint's image size
            inter = ft["intermediate"]["dataset"]
            log.info("%s: the intermediate step on %s first (finetune.intermediate)", run.name, inter)
            start, step = run_intermediate(loaded, rc.Recipe.of(plan.intermediate_settings(config, model)), sets[inter],
                                           **{**common, "state_path": output.parent / "state_intermediate.pt",
                                              "fp": fp_intermediate})
            extra = {"intermediate": {**step, "recipe": plan.intermediate_settings(config, model)}}
        if size:
            if start is not None:
                loaded = Loaded.load(info.model, info.path, device, image_size=size)
                start = loaded.resized(start)
            log.info("%s: fine-tuning at %d px (position embeddings interpolated), micro-batches of at most %s",
                     run.name, loaded.image_size, micro_hires)
            extra.update(image_size=loaded.image_size, micro_batch_size=micro_hires)
        out = run_classification(loaded, recipe, sets[names[0]], [sets[n] for n in names[1:]],
                                 metric=plan.classification_metric(config, protocol, model), start=start,
                                 **{**common, "micro_batch": micro_hires})
        out.update(extra)
    else:
        p = ft["patching"]
        out = run_patching(loaded, recipe, [sets[n] for n in p["tasks"]], sets[p["control"]], alphas=p["alphas"],
                           tolerance=p["control_tolerance"], **common)
    result = {"format": RESULT_FORMAT, "status": "ok", "protocol": protocol,
              "target": {"model": model, "scale": scale, "samples": samples, "protocol": protocol},
              "row": table_row(info), "checkpoint_path": info.path,
              "fingerprint": fp, "recipe": plan.recipe_settings(config, protocol, model), **out, "device": device,
              "processes": ranks.world, "micro_batch_size": out.get("micro_batch_size", plan.micro_batch_size(config, model)),
              "precision": "bf16 autocast" if ranks.bf16 else "fp32", "seconds": round(time.time() - t0, 2),
              "finished": datetime.datetime.now().isoformat(timespec="seconds")}
    if ranks.rank != 0:
        return result
    files.write_json(output, result)
    if out["skipped"]["train"] or out["skipped"]["test"]:
        log.warning("%s: skipped %d training and %d test samples that did not decode (see %s)", run.name,
                    out["skipped"]["train"], out["skipped"]["test"], output)
    log.info("%s %s done in %.0f s: %s", run.name, protocol, time.time() - t0,
             ", ".join(f"{r['dataset']} {r['metric']}={r['value']:.2f}" for r in out["rows"]))
    return result


# ---------------------------------------------------------------------------------------------
# the rule's job: one process, or the job's processes launched as training launches its ranks

FAILED_RANK = "failed.rank{rank}.txt"  # beside the result: why a process of a launched job failed


def run_job(config: dict, model: str, scale: str, samples: str, protocol: str, output: str | Path, *,
            run_record: str | Path | None = None, threads: int | None = None,
            log_file: str | Path | None = None) -> dict:
    """The rule finetune's job: ``finetune_checkpoint`` in this process (one process), or in the
    job's ``finetune.nproc`` x ``finetune.nodes`` processes (``clipscale.launch``: torchrun on
    one node, srun across the nodes of a Slurm job), waited for.

    A job that fails writes a failed result (its reason) and ends normally: the fine-tuning
    table lists it (FAILED) and nothing waits on it; delete the result to try again (the job
    resumes from its saved place). A job stopped by a signal (the walltime, Ctrl-C, scancel)
    saved its place and fails, for Snakemake to start it again; so does a launched job whose
    processes died without a reason (killed)."""
    from clipscale import ownership

    output = Path(output)
    try:  # before anything in the folder is touched (state.pt, the result, config.json)
        claim = ownership.claim(output.parent, f"fine-tuning {model}/{scale}/{samples} {protocol}")
    except ownership.OwnedElsewhere as e:  # no failed result: the folder's files are the owner's
        raise FinetuneError(str(e)) from None
    try:
        return _run_job(config, model, scale, samples, protocol, output, run_record, threads, log_file)
    finally:
        ownership.release(output.parent, claim)


def _run_job(config, model, scale, samples, protocol, output: Path, run_record, threads, log_file) -> dict:
    from clipscale.finetune import plan
    from clipscale.finetune.results import write_failure

    if plan.world_size(config) == 1:
        try:
            return finetune_checkpoint(config, model, scale, samples, protocol, output, run_record=run_record,
                                       threads=threads)
        except Exception as e:  # noqa: BLE001 - any failure is the job's result (a stop is no Exception)
            log.exception("%s/%s/%s %s: fine-tuning failed", model, scale, samples, protocol)
            return write_failure(output, model, scale, samples, protocol, f"{type(e).__name__}: {e}")
    return _launched(config, model, scale, samples, protocol, output, run_record, log_file)


def _launched(config: dict, model: str, scale: str, samples: str, protocol: str, output: Path, run_record,
              log_file) -> dict:
    from clipscale import stopping
    from clipscale.finetune import plan
    from clipscale.finetune.results import write_failure
    from clipscale.launch import build_command, step_environment

    ft = plan.section(config)
    output.parent.mkdir(parents=True, exist_ok=True)
    for old in output.parent.glob(FAILED_RANK.format(rank="*")):
        old.unlink()
    resolved = output.parent / "config.json"  # every process reads the same resolved config
    resolved.write_text(json.dumps(config, indent=1, default=str))
    args = ["--config-json", str(resolved), "--model", model, "--scale", scale, "--samples", samples,
            "--protocol", protocol, "--out", str(output)]
    if run_record:
        args += ["--run-record", str(run_record)]
    cmd = build_command(["-m", "clipscale.finetune"], args, nproc=ft["nproc"], nodes=ft["nodes"],
                        cpus_per_task=ft["threads"], gpus=bool(ft["gpus_per_node"]))
    log.info("launching: %s", " ".join(cmd))
    with open(log_file, "a") if log_file else contextlib.nullcontext() as sink:
        status, stopped = stopping.run_until_stopped(cmd, stdout=sink, environ=step_environment())
    reasons = [p.read_text().strip() for p in sorted(output.parent.glob(FAILED_RANK.format(rank="*")))]
    if status == 0 and output.exists():
        return json.loads(output.read_text())
    if reasons:
        return write_failure(output, model, scale, samples, protocol, reasons[0])
    state = output.parent / "state.pt"
    how = f"were stopped ({stopped})" if stopped else f"exited with status {status} and no reason"
    raise FinetuneError(f"{model}/{scale}/{samples} {protocol}: the fine-tuning processes {how}; running "
                        f"the workflow again resumes from {state if state.exists() else 'the start'}")


def main(argv: list[str] | None = None) -> int:
    """One process of a launched fine-tuning job (``python -m clipscale.finetune``)."""
    import argparse

    from clipscale import config as config_mod
    from clipscale.stopping import TrainingStopped

    parser = argparse.ArgumentParser(prog="python -m clipscale.finetune", description=main.__doc__)
    parser.add_argument("--config-json", required=True, help="the resolved config as JSON")
    for name in ("model", "scale", "samples", "protocol", "out"):
        parser.add_argument(f"--{name}", required=True)
    parser.add_argument("--run-record")
    a = parser.parse_args(argv)
    rank = int(os.environ.get("RANK", os.environ.get("SLURM_PROCID", 0)))
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter(f"%(asctime)s rank {rank} %(name)s %(levelname)s %(message)s"))
    root = logging.getLogger("clipscale")
    root.addHandler(handler)
    root.setLevel(logging.INFO if rank == 0 else logging.WARNING)
    root.propagate = False
    try:
        cfg = config_mod.validate(json.loads(Path(a.config_json).read_text()), a.config_json)
        finetune_checkpoint(cfg, a.model, a.scale, a.samples, a.protocol, a.out, run_record=a.run_record)
    except TrainingStopped as e:
        log.warning("%s", e)
        return 128 + e.signum
    except Exception as e:  # noqa: BLE001 - the launcher writes the job's failed result from this
        log.exception("fine-tuning failed")
        (Path(a.out).parent / FAILED_RANK.format(rank=rank)).write_text(f"{type(e).__name__}: {e}\n")
        return 1
    return 0
