"""From the config to open_clip_train's command line: device, arguments, a branch's trunk checkpoint."""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

from clipscale import grid
from clipscale.train.records import OPENCLIP_NAME, TrainingError, checkpoint_dir, run_dir

log = logging.getLogger("clipscale.train")


def device_of(setting: str) -> str:
    import torch

    if setting == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if setting == "cuda" and not torch.cuda.is_available():
        raise TrainingError("train.device is 'cuda' but no CUDA device is visible")
    return setting


def open_clip_args(config: dict, run: grid.Run, manifest: dict, hp: dict) -> list[str]:
    """The open_clip_train command line of one run."""
    if hp["train_num_samples"] < hp["global_batch_size"]:
        lever = ("choose samples_seen and train.cooldown.fraction with a larger common divisor"
                 if run.schedule == grid.CONST_COOLDOWN else "lower train.checkpoints")
        raise TrainingError(
            f"{run.name}: {hp['train_num_samples']} samples per checkpoint is less than one global "
            f"batch ({hp['global_batch_size']}); {lever} or the batch size")
    args = [
        "--model", run.model,
        "--train-data", manifest["url"],
        "--train-num-samples", str(hp["train_num_samples"]),
        "--dataset-type", "webdataset",
        "--dataset-resampled",
        "--epochs", str(hp["epochs"]),
        "--batch-size", str(hp["batch_size"]),
        "--accum-freq", str(hp["accum_freq"]),
        "--lr", str(hp["lr"]),
        "--wd", str(hp["wd"]),
        "--beta2", str(hp["beta2"]),
        "--warmup", str(hp["warmup"]),
        "--precision", hp["precision"],
        "--workers", str(hp["workers"]),
        "--local-loss",
        "--gather-with-grad",
        "--save-frequency", str(hp.get("save_every") or 1),
        "--resume", "latest",
        "--logs", str(run_dir(run)),
        "--name", OPENCLIP_NAME,
        "--seed", str(grid.open_clip_seed(config, run)),
        "--log-every-n-steps", "10",
        # training curves: tensorboard's event files under <run dir>/openclip/tensorboard/, wandb
        # offline (train.report_to; open_clip tests each name's presence in this string)
        "--report-to", ",".join(hp.get("report_to") or []),
    ]
    if run.schedule == grid.CONST_COOLDOWN:
        # constant after the warmup, then (1 - t)^power down to end_lr over the run's last
        # cooldown_epochs; a branch resumes its trunk's checkpoint inside the constant phase
        cd = hp["cooldown"]
        args += ["--lr-scheduler", "const-cooldown", "--epochs-cooldown", str(hp["cooldown_epochs"]),
                 "--lr-cooldown-power", str(cd["power"]), "--lr-cooldown-end", str(cd["end_lr"])]
    return args + list(hp.get("extra_args") or [])


def trunk_checkpoint(config: dict, run: grid.Run) -> tuple[grid.Run, int, Path] | None:
    """(trunk, epoch, its checkpoint file) that a const-cooldown branch starts from; None for
    any other run. The file must exist (the DAG waits for the trunk's job that writes it)."""
    branch = grid.trunk_of(config, run)
    if branch is None:
        return None
    trunk, epoch = branch
    path = checkpoint_dir(trunk) / f"epoch_{epoch}.pt"
    if not path.is_file():
        raise TrainingError(f"run {run.name} branches from {trunk.name} at epoch {epoch}, but "
                            f"{path} does not exist: train the trunk first")
    return trunk, epoch, path


def seed_branch(run: grid.Run, epoch: int, source: Path) -> Path:
    """Give a branch its start: the trunk's checkpoint ``epoch`` as its own epoch_<epoch>.pt
    (a hard link; a copy across filesystems), unless it has it already. open_clip's
    ``--resume latest`` then continues from there, or from the branch's own later checkpoints."""
    target = checkpoint_dir(run) / source.name
    if target.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(target.name + ".linking")
    tmp.unlink(missing_ok=True)
    try:
        os.link(source, tmp)
    except OSError:
        shutil.copy2(source, tmp)
    os.replace(tmp, target)
    log.info("run %s: starts from %s (epoch %d of its trunk)", run.name, source, epoch)
    return target
