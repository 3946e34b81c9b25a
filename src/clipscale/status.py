"""Where a study stands: ``clipscale status``, read from the files its jobs leave (and squeue).

One table of the grid (``grid.runs``), one row per run with its state:

* ``done``: its record ``run.json`` is there;
* ``training``: a job holds the run now (a Slurm job of the run's ``train``/``train_segment``
  rule that squeue shows running, or the live process that claimed the folder:
  ``owner.json``, ``clipscale.ownership``); step k of n from ``losses.csv``, its pace (samples
  per second) and ETA from the steps trained since the attempt's start or its newest checkpoint
  and the file times;
* ``waiting``: its Slurm job went back to the queue for its next walltime window (requeued), or,
  without Slurm, its last attempt ended at the walltime warning: the next one resumes;
* ``queued``: a Slurm job of the run waits in the queue and no attempt has started yet;
* ``interrupted``: the last attempt was stopped (SIGINT, SIGTERM) or killed (no end record) and
  no job holds the run: re-running the workflow resumes it at the place shown;
* ``failed``: the last attempt ended with an error, or the job's log ends with one (the reason
  and the log's path);
* ``pending``: nothing of the run yet (its inputs, or its turn, are still to come).

The windows (attempts) used come from ``attempts.jsonl``, the last loss from ``losses.csv``, the
place a run resumes from from its partial checkpoint (``partial.pt``: its epoch and step are read
from the pickle's opcodes, ``pickletools``, without unpickling anything) or its newest epoch
checkpoint. Then: evaluations done and missing per checkpoint, the fine-tuning jobs, and
whether the results table, the fits and the figures are older than what they are made from.

Slurm: where ``squeue`` answers, the user's jobs whose working directory is the study's are
matched to runs by the comment snakemake-executor-plugin-slurm gives them
(``rule_<rule>_wildcards_<w1>_<w2>...``, the rule's wildcard values joined by ``_``).

Nothing here writes a file: it works while Snakemake runs, after it died, and on a finished
study.
"""

from __future__ import annotations

import base64
import json
import os
import pickletools
import shutil
import subprocess
import zipfile
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path

from clipscale import grid, ownership, paths, resume, stopping
from clipscale import train as train_mod

STATES = ("done", "training", "waiting", "queued", "interrupted", "failed", "pending")
SLURM_ACTIVE = {"RUNNING", "COMPLETING", "CONFIGURING", "SIGNALING", "STAGE_OUT", "SUSPENDED", "STOPPED"}
SLURM_WAITING = {"PENDING", "REQUEUED", "REQUEUE_FED", "REQUEUE_HOLD", "RESV_DEL_HOLD", "SPECIAL_EXIT"}
PARTIAL_KEYS = ("epoch", "step_in_epoch", "num_batches", "global_step")
_INT_OPS = {"BININT", "BININT1", "BININT2", "LONG1", "INT", "LONG"}
_STR_OPS = {"BINUNICODE", "SHORT_BINUNICODE", "BINUNICODE8", "UNICODE", "SHORT_BINSTRING", "BINSTRING"}
_MEMO_OPS = {"BINPUT", "LONG_BINPUT", "PUT", "MEMOIZE"}


# ---------------------------------------------------------------------------------------------
# files of a run


def partial_place(path: str | Path) -> dict | None:
    """epoch, step_in_epoch, num_batches, global_step of a partial checkpoint (``partial.pt``,
    torch's zip format), read from its pickle's opcodes without unpickling: nothing of the file
    is run or built. None when there is none or it does not read as one."""
    try:
        with zipfile.ZipFile(path) as archive:
            name = next((n for n in archive.namelist() if n.endswith("/data.pkl") or n == "data.pkl"), None)
            if name is None:
                return None
            data = archive.read(name)
    except (OSError, zipfile.BadZipFile, KeyError):
        return None
    found: dict = {}
    key = None
    try:
        for n, (op, arg, _) in enumerate(pickletools.genops(data)):
            if op.name in _MEMO_OPS:
                continue
            if op.name in _INT_OPS and key in PARTIAL_KEYS and key not in found:
                found[key] = int(arg)
            key = arg if op.name in _STR_OPS else None
            # the top-level dict's plain fields come first (clipscale.resume writes them so); the
            # weights follow
            if key == "state_dict" or len(found) == len(PARTIAL_KEYS) or n > 400:
                break
    except (ValueError, EOFError):  # a truncated pickle: what was read before counts
        pass
    if not all(k in found for k in ("epoch", "step_in_epoch", "num_batches")):
        return None
    return found


def last_loss(path: str | Path) -> tuple[int | None, float] | None:
    """(global step, loss) of the last whole line of ``losses.csv`` (read from its end)."""
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(0, size - 4096))
            tail = fh.read().decode(errors="replace")
    except OSError:
        return None
    for line in reversed(tail.split("\n")[1:] if size > 4096 else tail.split("\n")):
        step, _, value = line.strip().partition(",")
        try:
            return (int(step) if step else None), float(value)
        except ValueError:
            continue
    return None


def _timestamp(iso: str | None) -> float | None:
    try:
        return datetime.fromisoformat(iso).timestamp() if iso else None
    except ValueError:
        return None


def _mtime(path: str | Path) -> float | None:
    try:
        return os.stat(path).st_mtime
    except OSError:
        return None


def last_error(log: str | Path) -> str | None:
    """The last ERROR line of a job's log (its message), or None. A log is appended to by every
    attempt: only the lines after the last attempt's start count (the caller decides which log)."""
    try:
        with open(log, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            fh.seek(max(0, fh.tell() - 65536))
            lines = fh.read().decode(errors="replace").splitlines()
    except OSError:
        return None
    for line in reversed(lines):
        if " ERROR " in line:
            message = line.split(" ERROR ", 1)[1].strip()
            return message if message and message != "job failed:" else _traceback_end(lines)
    return None


def _traceback_end(lines: list[str]) -> str | None:
    """The exception line of the last traceback in a log."""
    for line in reversed(lines):
        if line and not line.startswith(" ") and ("Error" in line or "Exception" in line):
            return line.strip()
    return None


# ---------------------------------------------------------------------------------------------
# Slurm


@dataclass
class SlurmJob:
    job_id: str
    state: str
    reason: str
    comment: str
    name: str
    workdir: str


def squeue_jobs(directory: str | Path = ".") -> list[SlurmJob] | None:
    """The user's Slurm jobs whose working directory is ``directory`` (the plugin submits with
    ``-D <workdir>``); None when there is no squeue or it does not answer."""
    if not shutil.which("squeue"):
        return None
    user = os.environ.get("USER") or os.environ.get("LOGNAME")
    who = ["-u", user] if user else ["--me"]
    try:
        res = subprocess.run(["squeue", *who, "-h", "-o", "%i|%T|%r|%k|%j|%Z"], capture_output=True,
                             text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return None
    if res.returncode != 0:
        return None
    here = os.path.realpath(directory)
    jobs = []
    for line in res.stdout.splitlines():
        parts = line.split("|")
        if len(parts) < 6:
            continue
        job = SlurmJob(*[p.strip() for p in parts[:5]], workdir="|".join(parts[5:]).strip())
        if os.path.realpath(job.workdir) == here:
            jobs.append(job)
    return jobs


def plugin_comment(rule: str, *wildcards) -> str:
    """The comment snakemake-executor-plugin-slurm gives a job of ``rule`` with these wildcard
    values (in the order of the rule's output pattern)."""
    return f"rule_{rule}_wildcards_" + "_".join(str(w) for w in wildcards).replace("/", "_")


def train_comments(config: dict, run: grid.Run) -> set[str]:
    """The comments of the run's training jobs: its train job and its train_segment jobs."""
    w = (run.model, run.scale, run.samples_key)
    out = {plugin_comment("train", *w)}
    out |= {plugin_comment("train_segment", *w, end) for end in grid.segment_ends(config, run)}
    return out


# ---------------------------------------------------------------------------------------------
# Snakemake's own marks in the working directory


def snakemake_incomplete(directory: str | Path = ".") -> set[str]:
    """Outputs of the jobs Snakemake runs now, or ran when it was stopped
    (``.snakemake/incomplete/``: a file per output, named by the base64 of its path; names
    longer than a file name are split into folders)."""
    root = Path(directory) / ".snakemake" / "incomplete"
    out = set()
    for marker in root.rglob("*") if root.is_dir() else []:
        if marker.is_file():
            try:
                out.add(base64.b64decode("".join(marker.relative_to(root).parts)).decode())
            except (ValueError, UnicodeDecodeError):
                continue
    return out


def snakemake_locked(directory: str | Path = ".") -> bool:
    """Whether a Snakemake holds the working directory (``.snakemake/locks/``; one killed with
    SIGKILL leaves its lock: ``snakemake --unlock``)."""
    locks = Path(directory) / ".snakemake" / "locks"
    return locks.is_dir() and any(locks.iterdir())


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


# ---------------------------------------------------------------------------------------------
# evaluations, fine-tuning, and what is made from them


@dataclass
class CheckpointEvals:
    checkpoint: str
    done: int
    total: int
    missing: list[str] = field(default_factory=list)
    state: str = ""  # complete | ready | waiting for training | running | failed
    log: str | None = None


def evaluations(config: dict, jobs: list[SlurmJob] | None = None, incomplete: set[str] = frozenset(),
                locked: bool = False) -> list[CheckpointEvals]:
    """Evaluation results done and missing per checkpoint, and the state of its job: running
    (a Slurm job, or Snakemake's incomplete mark while it holds the directory), incomplete (that
    mark left by a Snakemake that stopped), failed (its log's last error, newer than the
    checkpoint's record), ready, waiting for training."""
    from clipscale.evaluate import plan

    out = []
    comments = {j.comment: j for j in jobs or []}
    for ckpt in plan.checkpoint_wildcards(config):
        outputs = plan.outputs_of(config, ckpt)
        missing = [f"{d}/{t}" for (d, t), p in outputs.items() if not os.path.exists(p)]
        name = f"{ckpt['source']} {ckpt['model']}/{ckpt['scale']}/{ckpt['samples']} epoch {ckpt['epoch']}"
        log = paths.log_file("evaluate", ckpt["source"], ckpt["model"], ckpt["scale"], ckpt["samples"],
                             f"epoch_{ckpt['epoch']}")
        e = CheckpointEvals(name, len(outputs) - len(missing), len(outputs), missing, log=log)
        job = comments.get(plugin_comment("evaluate", *(ckpt[k] for k in plan.CHECKPOINT_WILDCARDS)))
        if not missing:
            e.state = "complete"
        elif job is not None:
            e.state = "running" if job.state in SLURM_ACTIVE else "queued"
        elif incomplete.intersection(outputs.values()):
            e.state = "running" if locked else "incomplete (its Snakemake stopped while it ran)"
        elif ckpt["source"] == "ours":
            run = grid.Run.from_wildcards(ckpt["model"], ckpt["scale"], ckpt["samples"])
            path = Path(paths.fill(paths.RUN_CHECKPOINTS, **run.wildcards)) / f"epoch_{ckpt['epoch']}.pt"
            record = plan.record_of(config, run, int(ckpt["epoch"]))
            if not (path.exists() and os.path.exists(record)):
                e.state = "waiting for training"
            else:
                error = last_error(log)
                e.state = f"failed: {error}" if error and (_mtime(log) or 0) > (_mtime(record) or 0) else "ready"
        else:
            error = last_error(log)
            e.state = f"failed: {error}" if error else "ready"
        out.append(e)
    return out


@dataclass
class FinetuneStatus:
    job: str
    state: str
    detail: str = ""
    log: str | None = None


def finetune_jobs(config: dict, jobs: list[SlurmJob] | None = None) -> list[FinetuneStatus]:
    from clipscale.finetune import plan as ft_plan

    if not ft_plan.enabled(config):
        return []
    comments = {j.comment: j for j in jobs or []}
    out = []
    for run in ft_plan.runs(config):
        for protocol in ft_plan.section(config)["protocols"]:
            folder = Path(paths.fill(paths.FINETUNE_DIR, **run.wildcards, protocol=protocol))
            log = paths.log_file("finetune", run.model, run.scale, run.samples_key, protocol)
            st = FinetuneStatus(f"{run.name} {protocol}", "pending", log=log)
            job = comments.get(plugin_comment("finetune", run.model, run.scale, run.samples_key, protocol))
            owner = ownership.read_owner(folder)
            if (folder / "result.json").exists() or Path(ft_plan.result_path(run, protocol)).exists():
                st.state = "done"
            elif job is not None:
                st.state = "running" if job.state in SLURM_ACTIVE else "queued"
                st.detail = f"Slurm job {job.job_id} {job.state}"
            elif owner is not None and ownership.is_live(owner)[0]:
                st.state, st.detail = "running", ownership.is_live(owner)[1]
            elif not Path(paths.fill(paths.RUN_DONE, **run.wildcards)).exists():
                st.state = "waiting for training"
            else:
                error = last_error(log)
                if error:
                    st.state, st.detail = "failed", f"{error} (see {log})"
                elif (folder / "state.pt").exists():
                    st.state, st.detail = "interrupted", f"resumes from {folder / 'state.pt'}"
                else:
                    st.state = "ready"
            out.append(st)
    return out


@dataclass
class OutputStatus:
    output: str
    state: str  # up to date | older than its inputs | missing | not made yet
    detail: str = ""


def _against(output: str, inputs: list[str], what: str, log: str | None = None) -> OutputStatus:
    there = [(p, _mtime(p)) for p in inputs]
    present = [(p, t) for p, t in there if t is not None]
    t_out = _mtime(output)
    if log and (_mtime(log) or 0) > (t_out or 0):  # its job ran after the output was made
        error = last_error(log)
        if error:
            return OutputStatus(output, "failed", f"{error} (see {log})")
    if t_out is None:
        return OutputStatus(output, "missing", f"{len(present)} of its {len(inputs)} {what} there")
    newer = sorted((p for p, t in present if t > t_out), key=lambda p: -(_mtime(p) or 0))
    absent = len(inputs) - len(present)
    if newer:
        return OutputStatus(output, "outdated", f"older than {len(newer)} of its {len(inputs)} {what} "
                            f"(newest {newer[0]})" + (f"; {absent} missing" if absent else ""))
    if absent:
        return OutputStatus(output, "incomplete", f"{absent} of its {len(inputs)} {what} not made yet")
    return OutputStatus(output, "up to date")


def outputs(config: dict) -> list[OutputStatus]:
    """The results table (and the fine-tuning table), the fits of our results and the figures,
    each against the files it is made from (file times: older than one of them means a re-run of
    the workflow remakes it)."""
    from clipscale.evaluate import plan
    from clipscale.finetune import plan as ft_plan

    out = [_against(paths.RESULTS_TABLE, plan.target_paths(config), "evaluation results",
                    paths.log_file("aggregate_results", "results"))]
    if ft_plan.enabled(config):
        out.append(_against(paths.FINETUNE_TABLE, ft_plan.target_paths(config), "fine-tuning results",
                            paths.log_file("aggregate_finetune", "finetune")))
    fit_of = {"ours": paths.RESULTS_TABLE, "published": paths.PUBLISHED_TABLE}
    inputs = ["ours"] + (["published"] if config.get("published", {}).get("enabled", True) else [])
    for name in inputs:
        out.append(_against(paths.fill(paths.FIT_INPUT_COEFFICIENTS, input=name), [fit_of[name]], "tables",
                            paths.log_file("fit", name)))
    try:
        from clipscale import figures
    except ImportError:  # pragma: no cover - matplotlib missing: figures are not made either
        return out
    tables = {"published": paths.PUBLISHED_TABLE, "ours": paths.RESULTS_TABLE}
    for spec in figures.figure_specs(config):
        if spec.kind == "overlap":
            made_from = [paths.OVERLAP_TABLE] if "ours" in spec.inputs else []
        else:
            made_from = [tables[n] for n in spec.inputs if n in tables]
            if spec.kind == "compute" and spec.fit:
                made_from += [paths.fill(paths.FIT_INPUT_COEFFICIENTS, input=n) for n in spec.inputs]
        if not made_from:
            continue
        out.append(_against(paths.fill(paths.FIGURE, figure=spec.name, ext="pdf"), made_from, "inputs",
                            paths.log_file("figures", spec.name)))
    return out


# ---------------------------------------------------------------------------------------------
# the whole study


def study(config: dict, directory: str | Path = ".", slurm: bool = True) -> dict:
    """Everything ``clipscale status`` shows, as plain data (its --json). Paths are relative to
    the study's working directory, which must be the current one."""
    jobs = squeue_jobs(directory) if slurm else None
    runs = [run_status(config, run, jobs) for run in grid.runs(config)]
    counts = {s: sum(r.state == s for r in runs) for s in STATES if any(r.state == s for r in runs)}
    locked, incomplete = snakemake_locked(directory), snakemake_incomplete(directory)
    evals = evaluations(config, jobs, incomplete, locked)
    return {
        "directory": str(Path(directory).resolve()),
        "time": datetime.now().astimezone().isoformat(timespec="seconds"),
        "snakemake_lock": locked,
        "snakemake_incomplete": sorted(incomplete),
        "slurm": None if jobs is None else [asdict(j) for j in jobs],
        "runs": [asdict(r) | {"progress": r.progress} for r in runs],
        "counts": counts,
        "evaluations": [asdict(e) for e in evals],
        "evaluations_done": sum(e.done for e in evals),
        "evaluations_total": sum(e.total for e in evals),
        "finetune": [asdict(f) for f in finetune_jobs(config, jobs)],
        "outputs": [asdict(o) for o in outputs(config)],
    }


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return ""
    seconds = int(round(seconds))
    if seconds < 120:
        return f"{seconds} s"
    if seconds < 7200:
        return f"{seconds // 60} min"
    if seconds < 3 * 86400:
        return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"
    return f"{seconds / 86400:.1f} d"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    widths = [max(len(str(c)) for c in col) for col in zip(header, *rows)]
    return ["  ".join(str(c).ljust(w) for c, w in zip(row, widths)).rstrip() for row in [header, *rows]]


def render(data: dict) -> str:
    """The status as text: the runs' table, then notes, evaluations, fine-tuning and outputs."""
    lines = []
    counts = ", ".join(f"{n} {s}" for s, n in data["counts"].items())
    slurm = ("squeue: no job of this study" if data["slurm"] == [] else
             f"squeue: {len(data['slurm'])} jobs of this study" if data["slurm"] else
             "no Slurm here: live jobs from owner.json")
    lock = ("a Snakemake holds it (or a killed one left its lock)" if data["snakemake_lock"]
            else "no Snakemake holds it")
    lines.append(f"{data['directory']} at {data['time']}: {len(data['runs'])} runs ({counts}); {lock}; {slurm}")
    lines.append("")
    rows = []
    for r in data["runs"]:
        rows.append([r["run"], r["state"], r["progress"],
                     f"{r['samples_per_s']:g}/s" if r["samples_per_s"] else "",
                     _duration(r["eta_s"]), str(r["windows"] or ""),
                     f"{r['last_loss']:.4f}" if r["last_loss"] is not None else ""])
    lines += _table(["run", "state", "progress", "samples", "ETA", "windows", "loss"], rows)
    notes = [r for r in data["runs"] if r["detail"] and r["state"] != "done"]
    if notes:
        lines.append("")
        lines += [f"  {r['run']}: {r['detail']}" for r in notes]
    lines.append("")
    evals = data["evaluations"]
    lines.append(f"evaluations: {data['evaluations_done']} of {data['evaluations_total']} results, "
                 f"{sum(e['state'] == 'complete' for e in evals)} of {len(evals)} checkpoints complete")
    waiting = [e for e in evals if e["state"] == "waiting for training"]
    for e in evals:
        if e["state"] not in ("complete", "waiting for training"):
            what = ", ".join(e["missing"]) if len(e["missing"]) <= 4 else f"{len(e['missing'])} sets/tasks"
            extra = f" (see {e['log']})" if e["state"].startswith("failed") else ""
            lines.append(f"  {e['checkpoint']}: {e['done']}/{e['total']}, {e['state']}{extra}; missing {what}")
    if waiting:
        lines.append(f"  {len(waiting)} checkpoints wait for their training")
    if data["finetune"]:
        ft = data["finetune"]
        lines.append(f"fine-tuning: {sum(f['state'] == 'done' for f in ft)} of {len(ft)} jobs done")
        for f in ft:
            if f["state"] != "done":
                lines.append(f"  {f['job']}: {f['state']}" + (f" ({f['detail']})" if f["detail"] else ""))
    lines.append("outputs:")
    for o in data["outputs"]:
        lines.append(f"  {o['output']}: {o['state']}" + (f" ({o['detail']})" if o["detail"] else ""))
    return "\n".join(lines)
