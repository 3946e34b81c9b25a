"""The launcher (the rule's script): starts the run's processes and waits; Slurm windows and requeue."""

from __future__ import annotations

import json
import logging
import math
import os
import signal
import subprocess
from pathlib import Path

from clipscale import grid, ownership, stopping
from clipscale.stopping import run_until_stopped
from clipscale.train.records import (ATTEMPTS_NAME, Requeued, TrainingError, _place, checkpoint_dir, read_attempts,
                                     run_dir)

log = logging.getLogger("clipscale.train")


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
