"""One open_clip training run per grid cell, as the paper trained them.

``python -m clipscale.train --config C --model M --scale S --samples N`` runs open_clip_train's own
``main`` in this process (so custom model configs can be registered first) with the paper's
recipe: --dataset-resampled, samples seen = epochs x train-num-samples, --local-loss
--gather-with-grad, a checkpoint per virtual epoch. Under torchrun or srun every process runs
this same module.

Resume: checkpoints live in the run's folder, which is not a Snakemake output, so a failed,
killed or timed-out job keeps them; the next attempt passes ``--resume latest`` and continues
from the newest good checkpoint. Before open_clip picks one, the file it would pick is checked
(loaded with ``weights_only=True``: a checkpoint is data, never code) and moved aside with the
reason when it is unreadable, unsafe, or not an epoch of this run. Only ``run.json`` is the
rule's output, written last.

Files in the run's folder besides run.json (kept across attempts, none a Snakemake output):

* ``attempts.jsonl``: one line when an attempt starts and one when it ends (steps, seconds,
  resumed_from, how it ended); run.json copies the attempts and adds steps/seconds totals;
* ``skipped/``: per-process counts of the samples open_clip's data pipeline skipped (corrupt
  images, samples without caption), summed into run.json's ``skipped_samples``;
* ``openclip/``: open_clip's own logs and ``checkpoints/epoch_N.pt`` (files moved aside end in
  ``.corrupt`` or ``.rejected``).

Stopping: SIGINT/SIGTERM reach the launcher (the rule's script), which passes them on to the
training processes (started in their own session) and kills them if they do not stop in time;
a training process stops at once (after a checkpoint being saved), records its attempt and
exits non-zero, so no run.json is written. Both also stop when the process above them exits.

Divergence: every loss is checked before its backward pass; NaN/inf, or a jump above
``max_loss_jump`` x the running mean, stops the run with a message naming the run and step.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections import Counter, deque
from datetime import datetime
from pathlib import Path

from clipscale import config as config_mod
from clipscale import files, grid, models, ownership, paths, resume, shaping, stopping, train_imports
from clipscale.stopping import TrainingStopped, run_until_stopped, stop_on_signals
from clipscale.subsets import read_manifest

log = logging.getLogger("clipscale.train")

OPENCLIP_NAME = "openclip"  # open_clip's --name: logs and checkpoints under <run dir>/openclip/
ATTEMPTS_NAME = "attempts.jsonl"  # <run dir>/attempts.jsonl: one line per attempt start and end
SKIPPED_NAME = "skipped"  # <run dir>/skipped/: per-process counts of skipped samples
SETTINGS_NAME = "settings.json"  # <run dir>/settings.json: what shapes the run (its params)
LOSSES_NAME = "losses.csv"  # <run dir>/losses.csv: global step, loss (rank 0, every step)
SUPERSEDED_NAME = "superseded"  # <run dir>/superseded/<time>/: a run of earlier settings
SKIP_DIR_ENV = "CLIPSCALE_SKIP_DIR"  # tells data worker processes where to count
MAX_SKIP_EXAMPLES = 3  # examples kept per skip reason


class TrainingError(RuntimeError):
    pass


class Requeued(TrainingError):
    """The job ended its walltime window and requeued itself: its next window goes on."""


class DivergenceError(TrainingError):
    pass


def run_dir(run: grid.Run) -> Path:
    return Path(paths.fill(paths.RUN_DIR, **run.wildcards))


def checkpoint_dir(run: grid.Run) -> Path:
    return Path(paths.fill(paths.RUN_CHECKPOINTS, **run.wildcards))


def checkpoints(run: grid.Run) -> dict[int, Path]:
    """epoch -> checkpoint path, for the checkpoints of a run present on disk."""
    folder = checkpoint_dir(run)
    out = {}
    if folder.is_dir():
        for p in folder.glob("epoch_*.pt"):
            tail = p.stem.split("_", 1)[1]
            if tail.isdigit():
                out[int(tail)] = p
    return dict(sorted(out.items()))


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


def file_identity(path: Path) -> dict:
    """What tells a checkpoint file's content apart cheaply (a re-trained run rewrites it)."""
    st = path.stat()
    return {"file": str(path), "size": st.st_size, "mtime_ns": st.st_mtime_ns}


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


def check_shards(manifest: dict, manifest_path: str | Path) -> None:
    """Every local shard of the subset must be a non-empty file: with --dataset-resampled,
    open_clip skips unreadable shards forever (a hang that floods the log), so fail first."""
    from braceexpand import braceexpand

    missing = []
    for source in manifest["url"].split("::"):  # open_clip's separator of several sources
        if "://" in source or source.startswith("pipe:"):
            continue  # remote shards: open_clip reads them, nothing to check here
        missing += [u for u in braceexpand(source)
                    if not os.path.isfile(u) or os.path.getsize(u) == 0]
    if missing:
        raise TrainingError(
            f"subset {manifest_path}: {len(missing)} shard(s) missing or empty, e.g. {missing[0]}; "
            f"re-make the subset (or the pool it links to)")


def checkpoint_problem(path: Path, folder: Path, epochs: int) -> tuple[str, str] | None:
    """Why ``--resume`` must not load ``path`` as (reason, suffix to move it aside with), or None.

    Ours are ``<folder>/epoch_N.pt`` with N <= epochs whose ``epoch`` field is N, loadable with
    ``weights_only=True`` (a pickle that needs more, e.g. one calling os.system, is refused
    without running it). An unreadable file (a job killed while saving) ends in ``.corrupt``,
    any other refused one in ``.rejected``.
    """
    m = re.fullmatch(r"epoch_(\d+)\.pt", path.name)
    if not m or path.parent != folder:
        return f"not named epoch_N.pt in {folder} (not a checkpoint of this run)", ".rejected"
    named = int(m.group(1))
    if named > epochs:
        return f"epoch {named} is beyond the run's {epochs} epochs", ".rejected"
    try:
        ckpt = files.load_weights_only(path)
    except Exception as e:  # noqa: BLE001 - any failure to load means unusable
        text = str(e)
        if "Weights only load failed" in text:
            detail = next((line.strip() for line in text.splitlines() if "Unsupported global" in line
                           or "WeightsUnpickler error" in line), text.splitlines()[0])
            return f"unsafe: not loadable with weights_only=True ({detail[:300]})", ".rejected"
        first = text.strip().splitlines()[0][:300] if text.strip() else ""
        return f"unreadable: {type(e).__name__}: {first}", ".corrupt"
    if not (isinstance(ckpt, dict) and isinstance(ckpt.get("epoch"), int) and "state_dict" in ckpt):
        return "no 'epoch' and 'state_dict': not a training checkpoint", ".rejected"
    if ckpt["epoch"] != named:
        return f"its 'epoch' field says {ckpt['epoch']}, its name {named}", ".rejected"
    return None


def _aside(path: Path, suffix: str) -> Path:
    """path + suffix, else + suffix.1, .2, ...: a file moved aside earlier is never overwritten."""
    target, n = path.with_name(path.name + suffix), 0
    while target.exists():
        n += 1
        target = path.with_name(f"{path.name}{suffix}.{n}")
    return target


def check_resume_checkpoints(run: grid.Run, epochs: int) -> list[dict]:
    """Move aside every checkpoint that ``--resume latest`` would pick but must not load, until
    it would pick a good one (or none); return what was moved, with the reasons.

    open_clip takes the last ``*.pt`` in its checkpoint folder in natural order (any name; its
    glob ``<folder>**/*.pt`` also matches sibling folders ``checkpoints*/``) and loads it with its
    own ``pt_load``: asking its ``get_latest_checkpoint`` which file that is, with the path it
    builds, means only a checked file can reach it.
    """
    from open_clip_train.main import get_latest_checkpoint

    folder = os.path.join(str(run_dir(run)), OPENCLIP_NAME, "checkpoints")  # as open_clip joins it
    rejected = []
    while latest := get_latest_checkpoint(folder, remote=False):
        path = Path(latest)
        problem = checkpoint_problem(path, Path(folder), epochs)
        if problem is None:
            break
        reason, suffix = problem
        aside = _aside(path, suffix)
        path.replace(aside)
        log.warning("checkpoint %s cannot be resumed from: %s; moved to %s", path, reason, aside)
        rejected.append({"file": str(path), "moved_to": str(aside), "reason": reason})
    return rejected


# ---------------------------------------------------------------------------------------------
# samples skipped by open_clip's data pipeline
# ---------------------------------------------------------------------------------------------


class _SkipCounter:
    """This process's skipped samples, rewritten to its own small file in ``$CLIPSCALE_SKIP_DIR``
    at each skip (skips are rare next to decoding). A file per process because the pipeline runs
    in data worker processes whose memory the training process never sees; a forked worker
    starts its own counts and file."""

    pid: int | None = None

    def add(self, reason: str, key: str | None, url: str | None, error: str | None = None) -> None:
        folder = os.environ.get(SKIP_DIR_ENV)
        if not folder:
            return
        if self.pid != os.getpid():
            self.pid, self.counts, self.examples = os.getpid(), Counter(), []
            self.path = Path(folder) / f"rank{rank()}-pid{self.pid}-{time.time_ns()}.json"
        self.counts[reason] += 1
        if self.counts[reason] <= MAX_SKIP_EXAMPLES:
            self.examples.append({"reason": reason, "key": key, "url": url, "error": error})
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"by_reason": self.counts, "examples": self.examples}))
        os.replace(tmp, self.path)  # never half a file for the summing process to read


_skips = _SkipCounter()
_last_sample: tuple[str | None, str | None] = (None, None)  # (key, url) of the sample in decoding


def _upstream(name: str):
    """open_clip_train.data's own function ``name``, also once this process has patched it (a
    worker started by spawn imports the module afresh, unpatched)."""
    import open_clip_train.data as oct_data

    return getattr(oct_data, "_clipscale_originals", {}).get(name) or getattr(oct_data, name)


def _select_counting(sample: dict) -> bool:
    """open_clip's filter_no_caption_or_no_image (which drops silently), counting the drops."""
    global _last_sample
    _last_sample = (sample.get("__key__"), sample.get("__url__"))
    if _upstream("filter_no_caption_or_no_image")(sample):
        return True
    lacks = {"no caption": "txt" not in sample,
             "no image": not any(ext in sample for ext in ("png", "jpg", "jpeg", "webp"))}
    _skips.add(", ".join(r for r, true in lacks.items() if true) or "filtered out", *_last_sample)
    return False


def _decode_error_skipped(exn: Exception) -> bool:
    """open_clip's log_and_continue for the decode stage, counting the skip. The sample is the one
    the filter passed last: the pipeline's stages are generators pulling one sample at a time."""
    _skips.add(f"decode error: {type(exn).__name__}", *_last_sample, error=repr(exn)[:300])
    return _upstream("log_and_continue")(exn)


def _read_error_skipped(exn: Exception) -> bool:
    """log_and_continue for reading the tar files (webdataset appends the shard url to args)."""
    url = next((a for a in reversed(getattr(exn, "args", ())) if isinstance(a, str)), None)
    _skips.add(f"read error: {type(exn).__name__}", None, url, error=repr(exn)[:300])
    return _upstream("log_and_continue")(exn)


def _tarfile_to_samples_counting(src, handler=None):
    """open_clip's tarfile_to_samples_nothrow with the counting handler (its default handler,
    log_and_continue, was bound when it was defined: patching that name does not reach it)."""
    return _upstream("tarfile_to_samples_nothrow")(src, handler=_read_error_skipped)


def install_skip_counting() -> None:
    """Count what open_clip's webdataset pipeline skips (it only logs "Ignoring" per sample).

    Patches names that ``open_clip_train.data.get_wds_dataset`` looks up when it builds the
    pipeline; fails loudly if upstream renamed them or stopped using them there.
    """
    import open_clip_train.data as oct_data

    wrappers = {"filter_no_caption_or_no_image": _select_counting,
                "log_and_continue": _decode_error_skipped,
                "tarfile_to_samples_nothrow": _tarfile_to_samples_counting}
    build = getattr(oct_data, "get_wds_dataset", None)
    used = set(build.__code__.co_names) if build is not None else set()
    missing = [n for n in wrappers if not hasattr(oct_data, n) or n not in used]
    if missing:
        raise TrainingError(f"open_clip_train.data.get_wds_dataset no longer uses {missing}: "
                            f"open_clip changed; update clipscale.train.install_skip_counting")
    if not hasattr(oct_data, "_clipscale_originals"):
        oct_data._clipscale_originals = {n: getattr(oct_data, n) for n in wrappers}
        for name, wrapper in wrappers.items():
            setattr(oct_data, name, wrapper)


def install_fast_data_path() -> None:
    """Give open_clip_train's data pipeline ``clipscale.augment``'s faster equivalents of its
    default training transform (the same crop distribution and, for a crop, the same tensor) and
    of its tokenizer (tokens of repeated captions remembered); any other transform passes
    unchanged; and the training pipeline's per-sample stages done a batch at a time and its shards
    read without tarfile, the same batches (``clipscale.datapath``). Patches the name ``get_data``
    that open_clip_train's main calls; fails loudly if upstream stopped calling it there."""
    import open_clip_train.main as oct_main

    from clipscale import augment, datapath

    main = getattr(oct_main, "main", None)
    upstream_main = main is not None and getattr(main, "__module__", None) == oct_main.__name__
    if not hasattr(oct_main, "get_data") or (upstream_main and "get_data" not in main.__code__.co_names):
        raise TrainingError("open_clip_train.main.main no longer calls get_data: open_clip changed; "
                            "update clipscale.train.install_fast_data_path")
    datapath.install_tar_reader()  # the shards read without tarfile's per-member Python
    if getattr(oct_main.get_data, "_clipscale_fast", False):
        return
    original = oct_main.get_data

    def get_data(args, preprocess_fns, *rest, **kwargs):
        preprocess_train, preprocess_val = preprocess_fns
        fast = augment.faster(preprocess_train)
        if fast is not preprocess_train:
            log.info("training transform: %r (open_clip's default, faster)", fast)
        if kwargs.get("tokenizer") is not None:
            kwargs["tokenizer"] = augment.CachedTokenizer(kwargs["tokenizer"])
            log.info("tokenizer: %r", kwargs["tokenizer"])
        data = original(args, (fast, preprocess_val), *rest, **kwargs)
        if "train" in data:  # its per-sample stages a batch at a time (clipscale.datapath)
            datapath.fuse(data["train"].dataloader)
        return data

    get_data._clipscale_fast = True
    oct_main.get_data = get_data


def install_shuffle_buffer(size: int) -> None:
    """open_clip_train's training-sample shuffle buffer (module constants that get_wds_dataset
    reads; 5,000 and 1,000 upstream): ``size`` samples, a fifth of them read before the first
    draw, as upstream's ratio."""
    import open_clip_train.data as oct_data

    if not hasattr(oct_data, "_SAMPLE_SHUFFLE_SIZE") or not hasattr(oct_data, "_SAMPLE_SHUFFLE_INITIAL"):
        raise TrainingError("open_clip_train.data has no _SAMPLE_SHUFFLE_SIZE/_INITIAL: open_clip "
                            "changed; update clipscale.train.install_shuffle_buffer")
    oct_data._SAMPLE_SHUFFLE_SIZE, oct_data._SAMPLE_SHUFFLE_INITIAL = size, max(1, size // 5)


def install_wandb_offline(run: grid.Run) -> None:
    """With ``wandb`` in train.report_to: log offline (``WANDB_MODE=offline`` unless the
    environment says otherwise) into the run's folder, and give each run its own W&B run.
    open_clip names the W&B run and its id after ``--name``, which is ``openclip`` for every run
    here (the folder layout): ``wandb sync`` would merge all runs into one. Patches the
    ``wandb.init`` that open_clip_train.main calls to use the run's name (id: the name with
    ``/`` as ``-``) and the project ``clipscale``, unless ``--wandb-project-name`` was given."""
    import open_clip_train.main as oct_main

    wandb = getattr(oct_main, "wandb", None)
    if wandb is None:
        raise TrainingError("train.report_to has wandb, but the wandb package is not installed "
                            "(pip install wandb) in this environment")
    os.environ.setdefault("WANDB_MODE", "offline")
    os.environ.setdefault("WANDB_DIR", str(run_dir(run).absolute()))
    init = getattr(wandb.init, "_clipscale_original", wandb.init)

    def run_init(*args, **kwargs):
        kwargs.update(name=run.name, id=re.sub(r"[^A-Za-z0-9_.-]", "-", run.name))
        if kwargs.get("project") in (None, "open-clip"):  # open_clip's default project name
            kwargs["project"] = "clipscale"
        return init(*args, **kwargs)

    run_init._clipscale_original = init
    wandb.init = run_init


def install_safe_saving() -> None:
    """open_clip_train saves each epoch checkpoint with ``torch.save(obj, path)`` straight to its
    name: on a full disk that left a half-written epoch_N.pt as the newest, and torch's error
    ("unexpected pos") named neither the file nor the cause. In this process ``torch.save`` to a
    path goes through ``files.torch_save``: a temporary file renamed once whole; a failed write
    removes it and raises ``files.WriteError`` naming the file ("no space left on device")."""
    import open_clip_train.main as oct_main
    import torch

    main = getattr(oct_main, "main", None)
    if getattr(main, "__module__", None) == oct_main.__name__ and "save" not in main.__code__.co_names:
        raise TrainingError("open_clip_train.main.main no longer calls torch.save: open_clip changed; "
                            "update clipscale.train.install_safe_saving")
    if getattr(torch.save, "_clipscale_original", None) is not None:
        return
    original = torch.save

    def save(obj, f, *args, **kwargs):
        if args or kwargs or not isinstance(f, (str, os.PathLike)):
            return original(obj, f, *args, **kwargs)
        files.torch_save(obj, f, save=original)

    save._clipscale_original = original
    torch.save = save


def skipped_summary(run: grid.Run) -> dict:
    """All skips of the run (every attempt, rank and worker): total, by reason, a few examples.
    A resampled sample counts each time it is drawn."""
    by_reason, examples = Counter(), []
    for f in sorted((run_dir(run) / SKIPPED_NAME).glob("*.json")):
        try:
            part = json.loads(f.read_text())
        except (OSError, ValueError):
            continue
        by_reason.update(part["by_reason"])
        examples += part["examples"]
    kept = [e for i, e in enumerate(examples)
            if sum(x["reason"] == e["reason"] for x in examples[:i]) < MAX_SKIP_EXAMPLES]
    return {"total": sum(by_reason.values()), "by_reason": dict(by_reason), "examples": kept}


# ---------------------------------------------------------------------------------------------
# attempts
# ---------------------------------------------------------------------------------------------


def _now() -> str:
    return datetime.now().astimezone().isoformat(timespec="milliseconds")


def _append_attempt(run: grid.Run, entry: dict) -> None:
    with open(run_dir(run) / ATTEMPTS_NAME, "a") as fh:
        fh.write(json.dumps(entry) + "\n")


def start_attempt(run: grid.Run, resumed_from: int, rejected: list[dict], partial: dict | None = None) -> dict:
    """Record this attempt's start (a line in attempts.jsonl): an attempt killed without a chance
    to record its end (SIGKILL, out of memory) still shows up. ``resumed_from`` is the epoch
    checkpoint, ``resumed_from_step`` the global step (a partial checkpoint's, if any)."""
    entry = {"id": f"{time.time_ns()}-{os.getpid()}", "started": _now(), "host": socket.gethostname(),
             "pid": os.getpid(), "slurm_job": os.environ.get("SLURM_JOB_ID"),
             "resumed_from": resumed_from,
             "resumed_from_step": partial.get("global_step") if partial else None,
             "rejected_checkpoints": rejected, "ended": "running"}
    _append_attempt(run, entry)
    return entry


def end_attempt(run: grid.Run, entry: dict, ended: str, steps: int, seconds: float) -> None:
    stop = stopping.current()
    place = stop.place if stop is not None else None
    entry.update(finished=_now(), ended=ended, steps=steps, seconds=round(seconds, 2), stopped_at=place)
    _append_attempt(run, entry)


def supersede_other_settings(run: grid.Run, settings: dict) -> Path | None:
    """Keep a run's folder only for the settings it was trained with (``settings.json``, the
    train rule's params). Snakemake reruns a run whose settings changed, and resuming would
    continue the old run's checkpoints under the new settings: move what an earlier setting left
    (checkpoints, partial checkpoint, attempts, skips, losses) to ``superseded/<time>/`` instead,
    so the run starts afresh and nothing is lost."""
    folder = run_dir(run)
    stamp = folder / SETTINGS_NAME
    text = json.dumps(settings, indent=1, sort_keys=True)
    leftovers = [folder / n for n in (OPENCLIP_NAME, resume.PARTIAL_NAME, ATTEMPTS_NAME, SKIPPED_NAME,
                                      LOSSES_NAME)]
    leftovers = [p for p in leftovers if p.exists()]
    target = None
    old = stamp.read_text() if stamp.exists() else None
    if leftovers and old != text:
        target = folder / SUPERSEDED_NAME / datetime.now().strftime("%Y%m%d-%H%M%S-%f")
        target.mkdir(parents=True)
        for p in leftovers + ([stamp] if stamp.exists() else []):
            p.replace(target / p.name)
        why = "other settings" if old is not None else "no settings.json (an unknown setting)"
        log.warning("run %s: its folder holds a run of %s; moved it to %s: this run starts afresh",
                    run.name, why, target)
    stamp.write_text(text)
    return target


def resume_before_missing(config: dict, run: grid.Run, last: int) -> Path | None:
    """A checkpoint up to epoch ``last`` that the run's evaluations read
    (``clipscale.evaluate.plan.our_epochs``) is gone (deleted by hand) while later ones are
    there: resuming from the newest would never write it again. The later ones move to
    ``superseded/<time>/`` and the run resumes before it: its training is deterministic, so it
    computes the same weights again. Returns that folder, if any."""
    from clipscale.evaluate.plan import our_epochs

    done = checkpoints(run)
    gone = [e for e in our_epochs(config, run) if e <= last and e not in done and any(d > e for d in done)]
    if not gone:
        return None
    target = run_dir(run) / SUPERSEDED_NAME / datetime.now().strftime("%Y%m%d-%H%M%S-%f")
    target.mkdir(parents=True)
    for epoch, path in done.items():
        if epoch > gone[0]:
            path.replace(target / path.name)
    log.warning("run %s: checkpoint %s is gone and later ones are there: moved them to %s; the run "
                "resumes before it", run.name, checkpoint_dir(run) / f"epoch_{gone[0]}.pt", target)
    return target


def read_attempts(run: grid.Run) -> list[dict]:
    """Attempts in order, a start line merged with its end line; one without an end was killed."""
    merged: dict[str, dict] = {}
    path = run_dir(run) / ATTEMPTS_NAME
    for line in path.read_text().splitlines() if path.exists() else []:
        try:
            entry = json.loads(line)
        except ValueError:  # a line cut short by a killed process
            continue
        merged[entry["id"]] = {**merged.get(entry["id"], {}), **entry}
    out = []
    for a in merged.values():
        if a["ended"] == "running":
            a = {**a, "ended": "killed (no end record: e.g. SIGKILL, out of memory, a lost node)",
                 "finished": None, "steps": None, "seconds": None}
        out.append(a)
    return out


def _how_it_ended(e: BaseException) -> str:
    stop = stopping.current()
    if stop is not None and stop.signum is not None:  # whatever broke first (a killed worker...)
        return f"signal {signal.Signals(stop.signum).name}" + (f" ({stop.why})" if stop.why else "")
    return f"error: {type(e).__name__}: {e}"[:500]


class LossGuard:
    """Checks each loss before backward: NaN/inf or a spike fails the run at that step."""

    def __init__(self, run_name: str, max_jump: float, window: int = 50, min_history: int = 10):
        self.run_name, self.max_jump = run_name, max_jump
        self.history: deque[float] = deque(maxlen=window)
        self.min_history = min_history
        self.step = 0  # losses checked
        self.done = 0  # backward passes completed (an attempt's steps)
        self.loss_log = None  # an open file: "global step,loss" per step (rank 0)

    def check(self, value: float, log: bool = True) -> None:
        """``log``: write the loss to losses.csv (a step's last batch, with accumulation)."""
        self.step += 1
        if self.loss_log is not None and log:
            step = resume.global_step()
            self.loss_log.write(f"{'' if step is None else step},{value!r}\n")
        hint = ("resume from the last good checkpoint with another precision, e.g. "
                "train.precision: amp_bf16 -> fp32 (or lower lr), and re-run the workflow")
        if not math.isfinite(value):
            raise DivergenceError(
                f"run {self.run_name}: loss is {value} at step {self.step} (this process); {hint}")
        if len(self.history) >= self.min_history:
            mean = sum(self.history) / len(self.history)
            if value > self.max_jump * mean:
                raise DivergenceError(
                    f"run {self.run_name}: loss spike at step {self.step}: {value:.4f} > "
                    f"{self.max_jump} x running mean {mean:.4f}; {hint}")
        self.history.append(value)


_active_guard: LossGuard | None = None


def install_guards(guard: LossGuard) -> None:
    """Hook the loss check (and a pending stop) into open_clip_train, load its resume checkpoint
    with weights_only=True, and make DDP work on CPU (gloo).

    Patches module attributes of open_clip_train in this process only (no installed file is
    edited); fails loudly if upstream renamed what is patched.
    """
    import open_clip_train.main as oct_main
    import open_clip_train.train as oct_train
    import torch

    global _active_guard
    for module, name in ((oct_train, "backward"), (oct_main, "pt_load")):
        if not hasattr(module, name):
            raise TrainingError(f"{module.__name__}.{name} not found: open_clip changed; "
                                f"update clipscale.train.install_guards")
    _active_guard = guard  # a second run in this process is checked by its own guard
    original_backward = oct_train.backward
    if not getattr(original_backward, "_clipscale_guard", False):
        def guarded_backward(total_loss, scaler):
            if stopping.current() is not None:
                stopping.current().check()  # a signal that came while the last checkpoint was being saved
            resume.step_boundary()  # asked to stop and keep the place: save it, stop every rank
            _active_guard.check(float(total_loss.detach()), log=resume.last_micro_batch())
            out = original_backward(total_loss, scaler)
            _active_guard.done += resume.last_micro_batch()  # steps, not accumulated batches
            return out

        guarded_backward._clipscale_guard = True
        oct_train.backward = guarded_backward

    if not getattr(oct_main.pt_load, "_clipscale_safe", False):
        def pt_load(file_path, map_location=None):
            """open_clip_train.file_utils.pt_load saying weights_only=True: left implicit, torch's
            TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1 would make it a full unpickle (code runs)."""
            import fsspec

            with fsspec.open(file_path, "rb") as f:
                return torch.load(f, map_location=map_location, weights_only=True)

        pt_load._clipscale_safe = True
        oct_main.pt_load = pt_load

    ddp = torch.nn.parallel.DistributedDataParallel
    if not getattr(ddp, "_clipscale_cpu", False):
        class CpuFriendlyDDP(ddp):
            """open_clip passes device_ids=[device]; gloo on CPU needs device_ids=None."""

            _clipscale_cpu = True

            def __init__(self, module, device_ids=None, **kwargs):
                if device_ids and all(torch.device(d).type == "cpu" for d in device_ids):
                    device_ids = None
                super().__init__(module, device_ids=device_ids, **kwargs)

        oct_main.torch.nn.parallel.DistributedDataParallel = CpuFriendlyDDP


def rank() -> int:
    for var in ("RANK", "SLURM_PROCID"):
        if var in os.environ:
            return int(os.environ[var])
    return 0


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


def launch(config: dict, run: grid.Run, manifest: str | Path, out: str | Path,
           log_file: str | Path | None = None, until: int | None = None,
           profile: str | Path | None = None, attempt: int = 1) -> None:
    """Start the run's processes (python, torchrun, or srun inside a Slurm job) and wait.
    ``until``: this job is the segment of the run that ends with checkpoint ``until``.

    The resolved config travels as JSON beside the run so every process sees the same one.
    SIGINT/SIGTERM to this process, or its parent's exit, stop them (``run_until_stopped``).
    """
    hp = grid.hparams(config, run)
    folder = run_dir(run)
    try:  # before anything in the folder is touched
        claim = ownership.claim(folder, f"run {run.name}")
    except ownership.OwnedElsewhere as e:
        raise TrainingError(str(e)) from None
    try:
        refuse_hopeless(run, attempt)
        hp = {**hp, "requeue": check_requeue(run, hp)}
        _launch(config, run, hp, manifest, out, log_file, until, profile)
    except Requeued:
        raise  # the job's next window (the same Slurm job id) is the same owner
    except BaseException:
        ownership.release(folder, claim)
        raise
    ownership.release(folder, claim)


def _launch(config: dict, run: grid.Run, hp: dict, manifest, out, log_file, until, profile) -> None:
    from clipscale.launch import build_command, step_environment

    folder = run_dir(run)
    resolved = folder / "config.json"
    resolved.write_text(json.dumps(config, indent=1, default=str))
    args = ["--config-json", str(resolved), "--model", run.model, "--scale", run.scale,
            "--samples", run.samples_key, "--manifest", str(manifest), "--out", str(out)]
    if until is not None:
        args += ["--until-epoch", str(until)]
    if profile:
        args += ["--profile", str(profile)]
    cmd = build_command(["-m", "clipscale.train"], args, nproc=hp["nproc"], nodes=hp["nodes"],
                        cpus_per_task=hp["threads"], gpus=bool(hp["gpus_per_node"]))
    log.info("launching: %s", " ".join(cmd))
    # a stopped run saves its place first: at the walltime warning it has signal_lead_s for that
    grace = max(stopping.STOP_GRACE_S, hp["signal_lead_s"] - 15)
    before = _stamp(out)
    if log_file:
        with open(log_file, "a") as sink:  # the processes' progress goes to the job's log
            status, stopped = run_until_stopped(cmd, stdout=sink, grace_s=grace, environ=step_environment())
    else:
        status, stopped = run_until_stopped(cmd, grace_s=grace, environ=step_environment())
    if _stamp(out) not in (None, before):  # the run (segment) finished: its record is whole
        if status != 0 or stopped:  # e.g. the walltime warning as python exited: nothing to resume
            log.warning("run %s: finished and wrote %s; the training processes then exited with "
                        "status %s%s: the run is complete, nothing to resume or requeue", run.name,
                        out, status, f" ({stopped})" if stopped else "")
        return
    if status == 128 + stopping.WALLTIME_SIGNAL:
        end_of_window(run, hp, log_file)
    if stopped or status == 128 + signal.SIGTERM:
        raise TrainingError(f"run {run.name}: stopped ({stopped or 'SIGTERM'}; training processes "
                            f"exited with status {status}) at {_place(run)}; re-running the "
                            f"workflow resumes there")
    if status != 0:
        raise TrainingError(f"run {run.name}: training processes exited with status {status}; "
                            f"re-running the workflow resumes from the latest checkpoint in "
                            f"{checkpoint_dir(run)}: {_place(run)}")
    if not Path(out).exists():
        raise TrainingError(f"run {run.name}: training ended without writing {out}")


def _stamp(path: str | Path) -> tuple[int, int] | None:
    """(inode, mtime in ns) of a file, None if there is none: tells a record this job wrote
    (written whole: a temporary file renamed) from one that was there before."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return st.st_ino, st.st_mtime_ns


def _place(run: grid.Run) -> str:
    """Where the run would resume: its partial checkpoint, else its newest epoch checkpoint."""
    partial = resume.peek(resume.partial_path(run_dir(run)))
    if partial:
        return f"{resume.describe(partial)} ({resume.partial_path(run_dir(run))})"
    done = checkpoints(run)
    return f"epoch {max(done)} ({done[max(done)]})" if done else "the start (no checkpoint yet)"


def refuse_hopeless(run: grid.Run, attempt: int) -> None:
    """Snakemake's third or later attempt of a job (its retries cover the walltime windows of a
    site without requeue) is not started when the attempt before it failed without training a
    step: the cause is not a walltime, and retrying spends a job on it again."""
    if attempt < 3:
        return
    last = (read_attempts(run) or [{}])[-1]
    ended = str(last.get("ended") or "")
    if ended.startswith("error") and not last.get("steps"):
        raise TrainingError(f"run {run.name}: not started again (Snakemake's attempt {attempt}): the attempt "
                            f"before failed without training a step ({ended}); fix the cause and re-run; see "
                            f"{run_dir(run) / ATTEMPTS_NAME}")


def slurm_job_fields(job_id: str) -> dict[str, str]:
    """``scontrol show job -o <id>`` as a dict (Requeue, TimeLimit, ...); {} when it cannot say."""
    try:
        res = subprocess.run(["scontrol", "show", "job", "-o", str(job_id)], capture_output=True, text=True,
                             timeout=60, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return {}
    if res.returncode != 0:
        return {}
    return dict(item.split("=", 1) for item in res.stdout.split() if "=" in item)


def check_requeue(run: grid.Run, hp: dict, fields: dict | None = None) -> bool | None:
    """At the start of a training job inside Slurm: whether the job can requeue itself at the
    walltime warning (``Requeue=1``: sbatch --requeue, which a site may turn off). Says so in the
    log at once when it cannot: each window then ends the job cleanly and Snakemake's retry (as
    many as the runs' expected windows: clipscale.resources.train_retries) resumes the run.
    None outside Slurm."""
    job = os.environ.get("SLURM_JOB_ID")
    if not job:
        return None
    fields = slurm_job_fields(job) if fields is None else fields
    if fields.get("Requeue") == "1":
        return True
    why = (f"Requeue={fields['Requeue']}" if "Requeue" in fields
           else "`scontrol show job` did not answer")
    log.warning("run %s: Slurm job %s cannot requeue itself (%s: the site or its options turn requeue "
                "off); at the walltime warning (%d s before the %d-min limit) the run saves its place and "
                "the job ends; Snakemake's retry resumes it in a new job", run.name, job, why,
                hp["signal_lead_s"], hp["runtime"])
    return False


def requeue_this_job(job_id: str) -> str | None:
    """``scontrol requeue`` this Slurm job (it goes back to the queue under the same id, so
    Snakemake keeps waiting for it and its retries are not used); returns the error, if any."""
    try:
        res = subprocess.run(["scontrol", "requeue", job_id], capture_output=True, text=True, timeout=60,
                             check=False)
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"{type(e).__name__}: {e}"
    return None if res.returncode == 0 else (res.stderr or res.stdout).strip() or f"exit {res.returncode}"


def end_of_window(run: grid.Run, hp: dict, log_file) -> None:
    """The training processes stopped at the walltime warning (raises TrainingError, always).

    Inside a Slurm job: requeue the job, so the next window resumes from the place just saved.
    Attempts go on while the run progresses: a window that ended before its first step (start-up
    took it: a slow file system, a loaded node; Slurm may also send the warning up to a minute
    early) is requeued once if the attempt before it trained; two such windows in a row stop the
    run with the reason (a walltime too short for the start-up never ends on its own)."""
    attempts = read_attempts(run) or [{}]
    last = attempts[-1]
    steps = last.get("steps") or 0
    where = _place(run)
    logs = f"see {log_file}" if log_file else f"see {run_dir(run) / ATTEMPTS_NAME}"
    before = (attempts[-2].get("steps") or 0) if len(attempts) > 1 else 0
    if steps <= 0 and before <= 0:
        raise TrainingError(
            f"run {run.name}: the walltime warning came before this attempt trained a step "
            f"(start-up took the window: {hp['runtime']} min minus signal_lead_s "
            f"{hp['signal_lead_s']} s){', as in the attempt before' if len(attempts) > 1 else ''}; "
            f"not requeued. Raise train.runtime or lower train.signal_lead_s; {logs}")
    if steps <= 0:
        log.warning("run %s: the walltime warning came before this attempt trained a step (start-up "
                    "took the window); the attempt before trained %d steps: requeued once more",
                    run.name, before)
    remaining = _remaining_windows(run, hp, last)
    job = os.environ.get("SLURM_JOB_ID")
    if not job:
        raise TrainingError(f"run {run.name}: stopped at the walltime warning (SIGUSR1) after {steps} "
                            f"steps, at {where}; re-running the workflow resumes there")
    if hp.get("requeue") is False:
        raise TrainingError(f"run {run.name}: window ended after {steps} steps at {where}; Slurm job {job} "
                            f"cannot requeue itself: Snakemake's retry resumes there{remaining}")
    error = requeue_this_job(job)
    if error:
        raise TrainingError(f"run {run.name}: window ended at {where} after {steps} steps, but "
                            f"`scontrol requeue {job}` failed ({error}): the job fails and Snakemake's "
                            f"retry resumes there (does the site allow requeue? sbatch --requeue); {logs}")
    log.warning("run %s: window ended after %d steps at %s; Slurm job %s requeued: the next window "
                "resumes there%s", run.name, steps, where, job, remaining)
    raise Requeued(f"run {run.name}: Slurm job {job} requeued for its next window (resumes at {where})")


def _remaining_windows(run: grid.Run, hp: dict, last: dict) -> str:
    """', about N more windows' from this attempt's pace (for the log)."""
    place = last.get("stopped_at") or {}
    seconds, steps = last.get("seconds") or 0, last.get("steps") or 0
    if not place or not seconds or not steps:
        return ""
    total = math.ceil(hp["samples_seen_exact"] / hp["global_batch_size"])
    left = max(0, total - place["global_step"])
    return f", about {math.ceil(left / (steps / seconds) / 60 / max(1e-9, hp['runtime'] - hp['signal_lead_s'] / 60)) if left else 0} more window(s) at this pace ({left} steps left)"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m clipscale.train", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", help="config YAML (validated)")
    parser.add_argument("--config-json", help="the resolved config as JSON (Snakemake passes it)")
    parser.add_argument("--model", required=True)
    parser.add_argument("--scale", required=True)
    parser.add_argument("--samples", required=True, help="samples seen, e.g. 48k or 3B")
    parser.add_argument("--manifest", required=True, help="subset manifest.json")
    parser.add_argument("--out", required=True, help="run.json to write on success")
    parser.add_argument("--profile", help="the model's profile (measured GMAC per sample); without it, "
                        "the config's or Table 25's value, else measured here")
    parser.add_argument("--until-epoch", type=int, help="stop once this epoch's checkpoint is saved "
                        "(a segment of the run); --out then gets the record up to it")
    a = parser.parse_args(argv)
    # our own handler on the clipscale logger only: open_clip_train installs one on the root
    # logger, and a second root handler would print every line twice
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    log.propagate = False
    if not (a.config or a.config_json):
        parser.error("one of --config or --config-json is required")
    if a.config_json:
        cfg = config_mod.validate(json.loads(Path(a.config_json).read_text()), a.config_json)
    else:
        cfg = config_mod.load(a.config)
    run = grid.find_run(cfg, a.model, a.scale, a.samples)
    train_imports.keep_out(train_imports.unused(cfg, run))  # one job, one process: before open_clip
    with stop_on_signals():
        try:
            record = train(cfg, run, a.manifest, until=a.until_epoch)
            if rank() == 0:
                prof = json.loads(Path(a.profile).read_text()) if a.profile else None
                record["gmac_per_sample"] = models.gmac_per_sample(cfg, run.model, prof)
                record["total_gmac"] = record["gmac_per_sample"] * record["samples_seen_exact"]
                record["trained_gmac"] = record["gmac_per_sample"] * record["samples_trained_exact"]
                tmp = Path(f"{a.out}.tmp")
                tmp.write_text(json.dumps(record, indent=1))
                os.replace(tmp, a.out)  # whole or not at all, even if a signal comes now
                log.info("run %s done in %.1f s: %s", run.name, record["seconds_this_attempt"], a.out)
        except TrainingError as e:
            log.error("%s", e)
            return 1
        except TrainingStopped as e:
            log.warning("run %s %s; the next attempt resumes from the latest checkpoint", run.name, e)
            return 128 + e.signum
    return 0


if __name__ == "__main__":
    import traceback

    from clipscale.logs import exit_now

    try:
        status = main()
    except SystemExit as e:  # argparse's
        status = e.code if isinstance(e.code, int) else 1
    except BaseException:  # unforeseen: its traceback, then the same exit (Python's own waited
        traceback.print_exc()  # forever for the data workers, which ignore SIGTERM)
        status = 1
    stopping.end_data_workers()  # any left by an error (none after a run that ended well)
    exit_now(status)  # what the run wrote is closed: skip tearing down torch (about 2 s)
