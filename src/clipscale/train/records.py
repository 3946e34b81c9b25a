"""The run's folder and its records: paths, checkpoints on disk and their checks, attempts, settings."""

from __future__ import annotations

import json
import logging
import os
import re
import signal
import socket
import time
from datetime import datetime
from pathlib import Path

from clipscale import files, grid, paths, resume, stopping

log = logging.getLogger("clipscale.train")


OPENCLIP_NAME = "openclip"  # open_clip's --name: logs and checkpoints under <run dir>/openclip/
ATTEMPTS_NAME = "attempts.jsonl"  # <run dir>/attempts.jsonl: one line per attempt start and end
SKIPPED_NAME = "skipped"  # <run dir>/skipped/: per-process counts of skipped samples
SETTINGS_NAME = "settings.json"  # <run dir>/settings.json: what shapes the run (its params)
LOSSES_NAME = "losses.csv"  # <run dir>/losses.csv: global step, loss (rank 0, every step)
SUPERSEDED_NAME = "superseded"  # <run dir>/superseded/<time>/: a run of earlier settings
SKIP_DIR_ENV = "CLIPSCALE_SKIP_DIR"  # tells data worker processes where to count


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


def file_identity(path: Path) -> dict:
    """What tells a checkpoint file's content apart cheaply (a re-trained run rewrites it)."""
    st = path.stat()
    return {"file": str(path), "size": st.st_size, "mtime_ns": st.st_mtime_ns}


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


def rank() -> int:
    for var in ("RANK", "SLURM_PROCID"):
        if var in os.environ:
            return int(os.environ[var])
    return 0


def _place(run: grid.Run) -> str:
    """Where the run would resume: its partial checkpoint, else its newest epoch checkpoint."""
    partial = resume.peek(resume.partial_path(run_dir(run)))
    if partial:
        return f"{resume.describe(partial)} ({resume.partial_path(run_dir(run))})"
    done = checkpoints(run)
    return f"epoch {max(done)} ({done[max(done)]})" if done else "the start (no checkpoint yet)"
