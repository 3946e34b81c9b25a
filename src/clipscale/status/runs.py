"""A training run's state (``run_status``): done, training, waiting, queued, interrupted, failed, pending."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from clipscale import grid, ownership, paths, resume, stopping
from clipscale import train as train_mod
from clipscale.status.queue import SLURM_ACTIVE, SLURM_WAITING, SlurmJob, train_comments
from clipscale.status.traces import _mtime, _timestamp, last_error, last_loss, partial_place


STATES = ("done", "training", "waiting", "queued", "interrupted", "failed", "pending")


# ---------------------------------------------------------------------------------------------
# runs


@dataclass
class RunStatus:
    run: str
    model: str
    scale: str
    samples: str
    schedule: str
    state: str
    detail: str = ""
    step: int | None = None  # steps done (1-based, global: a branch counts its trunk's)
    steps: int | None = None  # the run's steps in all
    epoch: int | None = None  # newest epoch checkpoint
    epochs: int | None = None
    samples_per_s: float | None = None
    eta_s: float | None = None
    windows: int = 0  # attempts
    last_loss: float | None = None
    resumes_at: str | None = None
    log: str | None = None
    slurm_job: str | None = None
    slurm_state: str | None = None

    @property
    def progress(self) -> str:
        if not self.step or not self.steps:  # none yet (a run starting: its detail says so)
            return ""
        return f"step {self.step} of {self.steps} ({100 * self.step / self.steps:.0f}%)"


def _attempts(run: grid.Run) -> list[dict]:
    """attempts.jsonl's attempts, start lines merged with end lines (``ended: running`` kept)."""
    merged: dict[str, dict] = {}
    path = train_mod.run_dir(run) / train_mod.ATTEMPTS_NAME
    try:
        text = path.read_text()
    except OSError:
        return []
    for line in text.splitlines():
        try:
            entry = json.loads(line)
            merged[entry["id"]] = {**merged.get(entry["id"], {}), **entry}
        except (ValueError, KeyError, TypeError):
            continue
    return list(merged.values())


def _live_owner(run: grid.Run, jobs: list[SlurmJob] | None) -> tuple[bool, str]:
    owner = ownership.read_owner(train_mod.run_dir(run))
    if owner is None:
        return False, ""
    if owner.get("slurm_job_id") and jobs is not None:
        states = {j.job_id: j.state for j in jobs}
        return ownership.is_live(owner, lambda job: states.get(job))
    return ownership.is_live(owner)


def _resume_place(run: grid.Run, epochs_done: int | None) -> str:
    part = partial_place(resume.partial_path(train_mod.run_dir(run)))
    if part and (epochs_done is None or part["epoch"] >= epochs_done):
        return resume.describe(part)
    return f"epoch {epochs_done}" if epochs_done else "the start"


def _progress(st: RunStatus, run: grid.Run, hp: dict, attempt: dict | None, checkpoints: dict) -> None:
    """step, pace and ETA of a run being trained now."""
    per_epoch = hp["samples_seen_exact"] // hp["epochs"] // hp["global_batch_size"]
    folder = train_mod.run_dir(run)
    losses = folder / train_mod.LOSSES_NAME
    started = _timestamp((attempt or {}).get("started"))
    lost = last_loss(losses)
    changed = _mtime(losses)
    start_step = (attempt or {}).get("resumed_from_step")
    if start_step is None:
        start_step = ((attempt or {}).get("resumed_from") or 0) * per_epoch
    step = start_step
    if lost and lost[0] is not None and (started is None or (changed or 0) >= started):
        step = max(step, lost[0] + 1)
    st.step = step
    if started is None or changed is None or step <= start_step:
        return
    # the pace since the newest checkpoint this attempt wrote (start-up excluded), else its start
    ref_t, ref_step = started, start_step
    for epoch, path in checkpoints.items():
        t = _mtime(path)
        if t is not None and t >= started and epoch * per_epoch < step and t > ref_t:
            ref_t, ref_step = t, epoch * per_epoch
    if changed > ref_t and step > ref_step:
        rate = (step - ref_step) / (changed - ref_t)
        st.samples_per_s = round(rate * hp["global_batch_size"], 1)
        st.eta_s = round(max(0, st.steps - step) / rate, 1)


def run_status(config: dict, run: grid.Run, jobs: list[SlurmJob] | None = None) -> RunStatus:
    """The state of one run of the grid (paths relative to the working directory)."""
    hp = grid.hparams(config, run)
    folder = train_mod.run_dir(run)
    log = paths.log_file("train", run.model, run.scale, run.samples_key)
    st = RunStatus(run.name, run.model, run.scale, run.samples_key, run.schedule, "pending",
                   steps=hp["samples_seen_exact"] // hp["global_batch_size"], epochs=hp["epochs"], log=log)
    attempts = _attempts(run)
    st.windows = len(attempts)
    lost = last_loss(folder / train_mod.LOSSES_NAME)
    st.last_loss = lost[1] if lost else None
    checkpoints = train_mod.checkpoints(run)
    st.epoch = max(checkpoints) if checkpoints else None
    done = Path(paths.fill(paths.RUN_DONE, **run.wildcards))
    if done.exists():
        try:
            record = json.loads(done.read_text())
        except ValueError:
            record = {}
        st.state, st.step, st.epoch = "done", st.steps, hp["epochs"]
        st.windows = len(record.get("attempts") or attempts)
        seconds = record.get("seconds_total")
        st.detail = f"{record.get('steps_total', '?')} steps in {seconds} s" if seconds is not None else ""
        return st
    comments = train_comments(config, run)
    mine = [j for j in jobs or [] if j.comment in comments]
    active = [j for j in mine if j.state in SLURM_ACTIVE]
    waiting = [j for j in mine if j.state in SLURM_WAITING]
    job = (active or waiting or [None])[0]
    if job is not None:
        st.slurm_job, st.slurm_state = job.job_id, job.state
        st.log = log if "train_segment" not in job.comment else paths.log_file(
            "train", run.model, run.scale, run.samples_key, "epoch_" + job.comment.rsplit("_", 1)[1])
    live, why = _live_owner(run, jobs)
    last = attempts[-1] if attempts else None
    ended = str((last or {}).get("ended") or "")
    if active or (live and not waiting):
        st.state = "training"
        current = last if last and ended == "running" else None
        _progress(st, run, hp, current, checkpoints)
        where = f"Slurm job {job.job_id} {job.state}" if active else why
        if current is None:  # claimed, not started yet (start-up, or between two attempts)
            st.detail = f"starting ({where}); resumes at {_resume_place(run, st.epoch)}"
        else:
            st.detail = where
        return st
    st.resumes_at = _resume_place(run, st.epoch) if (attempts or checkpoints) else None
    if st.resumes_at is not None:  # the steps kept: those up to the place it resumes from
        part = partial_place(resume.partial_path(folder))
        per_epoch = st.steps // hp["epochs"]
        kept = (st.epoch or 0) * per_epoch
        st.step = part["global_step"] if part and part.get("global_step", -1) >= kept else kept
    if waiting:
        if attempts:
            st.state = "waiting"
            st.detail = (f"Slurm job {job.job_id} {job.state} ({job.reason}) for its next window; "
                         f"resumes at {st.resumes_at}")
        else:
            st.state = "queued"
            st.detail = f"Slurm job {job.job_id} {job.state} ({job.reason})"
        return st
    if last is None:
        error = last_error(log)
        if error:
            st.state, st.detail = "failed", f"{error} (see {log})"
        return st
    walltime = f"signal {stopping.WALLTIME_SIGNAL.name}"
    if ended.startswith("error"):
        st.state, st.detail = "failed", f"{ended} (see {log})"
    elif ended.startswith(walltime):
        st.state = "waiting"
        st.detail = f"window ended at the walltime warning; the next attempt resumes at {st.resumes_at}"
    elif ended.startswith("signal") or ended == "running":
        how = ended if ended != "running" else "killed (no end record: e.g. SIGKILL, a lost node)"
        st.state = "interrupted"
        st.detail = f"{how}; re-running the workflow resumes at {st.resumes_at}"
    elif ended.startswith("segment done"):
        st.state = "pending"
        st.detail = f"{ended}; its next job resumes at {st.resumes_at}"
    else:  # "completed" without run.json: the record was not written (the job's log says why)
        error = last_error(log)
        st.state = "failed" if error else "interrupted"
        st.detail = f"{ended}, no {done.name}" + (f": {error}" if error else "") + f" (see {log})"
    return st
