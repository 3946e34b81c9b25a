"""One training process: runs open_clip_train's ``main`` with the patches and returns the run record."""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

from clipscale import files, grid, models, resume, shaping, stopping
from clipscale.subsets import read_manifest
from clipscale.train.arguments import device_of, open_clip_args, seed_branch, trunk_checkpoint
from clipscale.train.patches import (LossGuard, install_fast_data_path, install_guards, install_multi_tensor_adamw,
                                     install_safe_saving, install_shuffle_buffer, install_skip_counting,
                                     install_wandb_offline, skipped_summary)
from clipscale.train.records import (LOSSES_NAME, OPENCLIP_NAME, SKIPPED_NAME, SKIP_DIR_ENV, TrainingError,
                                     _how_it_ended, _place, check_resume_checkpoints, check_shards, checkpoint_dir,
                                     checkpoints, end_attempt, file_identity, rank, read_attempts,
                                     resume_before_missing, run_dir, start_attempt, supersede_other_settings)

log = logging.getLogger("clipscale.train")


def train(config: dict, run: grid.Run, manifest_path: str | Path, until: int | None = None) -> dict:
    """Run (or resume) one training run; return the run record written to run.json. With
    ``until`` (a segment of the run, train.segments), stop once checkpoint ``until`` is saved:
    the record then describes the run up to that checkpoint (``segment_end``)."""
    import torch
    from open_clip_train.main import main as open_clip_main

    hp = grid.hparams(config, run)
    manifest = read_manifest(manifest_path)
    check_shards(manifest, manifest_path)
    branch = trunk_checkpoint(config, run)
    device = device_of(hp["device"])
    if device == "cpu":
        torch.set_num_threads(hp["threads"])
        if hp["precision"] != "fp32":
            log.warning("precision %s on CPU is slow (bf16 autocast); fp32 is advised",
                        hp["precision"])
    models.register(config)
    if hp["world_size"] > 1:
        from clipscale.launch import apply_env

        apply_env()  # rank, world size, MASTER_ADDR/PORT from torchrun's or srun's variables
    # open_clip's --device defaults to cuda: without this, train.device: cpu is ignored on GPUs
    args = ["--device", device] + open_clip_args(config, run, manifest, hp)
    guard = LossGuard(run.name, hp["max_loss_jump"])
    final = checkpoint_dir(run) / f"epoch_{hp['epochs']}.pt"
    skip_dir = run_dir(run) / SKIPPED_NAME
    attempt, t0, loss_log = None, time.time(), None
    try:
        if rank() == 0:
            run_dir(run).mkdir(parents=True, exist_ok=True)
            settings = shaping.train(config, run)
            if branch is not None:  # a branch of other trunk weights is another run
                settings = {**settings, "branched_from": file_identity(branch[2])}
            supersede_other_settings(run, settings)
            if branch is not None:
                seed_branch(run, branch[1], branch[2])
            resume_before_missing(config, run, until or hp["epochs"])
            rejected = check_resume_checkpoints(run, hp["epochs"])
            done = checkpoints(run)
            start = max(done) if done else 0
            partial = resume.check_partial(resume.partial_path(run_dir(run)), start, hp["epochs"])
            attempt = start_attempt(run, start, rejected, partial)
            log.info("run %s: epochs %d x %d samples = %d samples seen, %s; resuming after %s",
                     run.name, hp["epochs"], hp["train_num_samples"], hp["samples_seen_exact"],
                     device, resume.describe(partial) if partial else f"epoch {start}")
            log.info("open_clip_train %s (sample shuffle buffer %d)", " ".join(args), hp["shuffle_buffer"])
            loss_log = open(run_dir(run) / LOSSES_NAME, "a", buffering=1)  # a line per step
            guard.loss_log = loss_log
        install_guards(guard)
        resume.install(run_dir(run), OPENCLIP_NAME, rank(), until=until)
        install_skip_counting()
        install_fast_data_path()
        install_shuffle_buffer(hp["shuffle_buffer"])
        install_multi_tensor_adamw()
        stopping.keep_data_workers_through_stops()
        install_safe_saving()
        if "wandb" in (hp.get("report_to") or []) and rank() == 0:
            install_wandb_offline(run)
        skip_dir.mkdir(parents=True, exist_ok=True)
        os.environ[SKIP_DIR_ENV] = str(skip_dir.absolute())  # data workers inherit it
        t0 = time.time()
        try:
            status = open_clip_main(args)
        except resume.SegmentDone:
            status = None
        if stopping.current() is not None:
            stopping.current().check()  # a signal that came while the last checkpoint was being saved
        if status not in (None, 0):  # open_clip's main returns -1 on errors yet exits 0
            raise TrainingError(f"run {run.name}: open_clip_train returned {status}; see its log "
                                f"{run_dir(run) / OPENCLIP_NAME / 'out.log'}")
        if until is not None:
            final = checkpoint_dir(run) / f"epoch_{until}.pt"
        if not final.exists():
            which = "final checkpoint" if until is None else f"checkpoint of epoch {until}"
            raise TrainingError(f"run {run.name}: finished without its {which} {final}")
        if rank() == 0 and until is None:
            resume.finished(run_dir(run))
    except BaseException as e:
        if attempt is not None:
            try:
                end_attempt(run, attempt, _how_it_ended(e), guard.done, time.time() - t0)
            except OSError as err:  # e.g. the disk that is full
                log.warning("run %s: could not record the attempt's end: %s", run.name, err)
        if isinstance(e, files.WriteError) or (isinstance(e, OSError) and e.errno in files.NO_SPACE_ERRNOS):
            raise TrainingError(f"run {run.name}: {e}; re-run with space, it resumes from "
                                f"{_place(run)}") from e
        raise
    finally:
        os.environ.pop(SKIP_DIR_ENV, None)  # counting is for this run's data workers only
        if loss_log is not None:
            loss_log.close()
    seconds = time.time() - t0
    if attempt is None:  # another rank: rank 0 writes the record
        return {}
    end_attempt(run, attempt, "completed" if until is None else f"segment done (epoch {until})",
                guard.done, seconds)
    attempts = read_attempts(run)
    record = {
        "model": run.model,
        "scale": run.scale,
        "samples_seen": run.samples_seen,
        "samples_seen_exact": hp["samples_seen_exact"],
        "samples_seen_label": run.samples_label,
        "schedule": run.schedule,
        # what this run's jobs trained (a branch: its cooldown; the prefix is its trunk's)
        "samples_trained_exact": hp["samples_trained_exact"],
        "branched_from": None if branch is None else {
            "run": branch[0].name, "epoch": branch[1], "checkpoint": str(branch[2])},
        "cooldown_epochs": hp.get("cooldown_epochs"),
        "data_samples": manifest["n_samples"],
        "epochs": hp["epochs"],
        "train_num_samples": hp["train_num_samples"],
        "global_batch_size": hp["global_batch_size"],
        "world_size": hp["world_size"],
        "accum_freq": hp["accum_freq"],
        "lr": hp["lr"],
        "warmup": hp["warmup"],
        "precision": hp["precision"],
        "device": device,
        "steps_this_attempt": guard.step,
        "seconds_this_attempt": attempt["seconds"],
        "steps_total": sum(a["steps"] or 0 for a in attempts),  # a killed attempt's are unknown
        "seconds_total": round(sum(a["seconds"] or 0 for a in attempts), 2),
        "attempts": attempts,
        "rejected_checkpoints": [r for a in attempts for r in a.get("rejected_checkpoints", [])],
        "skipped_samples": skipped_summary(run),
        "final_checkpoint": str(final) if until is None else None,
        "segment_end": until,
        "checkpoints": {str(e): str(p) for e, p in checkpoints(run).items() if until is None or e <= until},
    }
    if run.seed:  # grid.seeds > 1: which repeat of its cell (a seed-0 record is a single-seed grid's)
        record.update(seed_index=run.seed, seed=grid.open_clip_seed(config, run))
    return record
