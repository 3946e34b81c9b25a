"""What Slurm and Snakemake say: squeue's jobs and their comments, Snakemake's incomplete and locked marks."""

from __future__ import annotations

import base64
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from clipscale import grid


SLURM_ACTIVE = {"RUNNING", "COMPLETING", "CONFIGURING", "SIGNALING", "STAGE_OUT", "SUSPENDED", "STOPPED"}
SLURM_WAITING = {"PENDING", "REQUEUED", "REQUEUE_FED", "REQUEUE_HOLD", "RESV_DEL_HOLD", "SPECIAL_EXIT"}


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
