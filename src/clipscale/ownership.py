"""One owner per run folder: a training (or fine-tuning) job claims its folder before it touches it.

A training job on Slurm requeues itself while its run progresses, whether or not Snakemake still
runs. If Snakemake dies (a login node rebooted, a killed session), a restarted Snakemake submits
the same run again; without an owner, two jobs would write the same ``partial.pt``,
``epoch_N.pt`` and ``attempts.jsonl``. So a job writes ``<folder>/owner.json`` (Slurm job id,
host, pid, the process's start time, when) before anything else, and refuses to start while
another live job owns the folder:

* a Slurm owner is live while ``squeue`` shows its job queued, running, requeued, suspended or
  completing (a requeued job keeps its id: its next window is the same owner and takes the folder
  back);
* a local owner (no Slurm job) is live while its process runs on this host (pid and start time,
  so a reused pid is not taken for it); an owner on another host without a Slurm job cannot be
  checked from here and is taken as live, with a message saying how to release it.

A dead owner's claim is taken over (its record moved to ``owner.json.<time>.released``). The
check and the claim happen under ``owner.lock`` (a directory: ``mkdir`` is atomic, also on NFS),
so two jobs starting at once cannot both win.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import socket
import subprocess
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator, Mapping

log = logging.getLogger("clipscale.train")

OWNER_NAME = "owner.json"
LOCK_NAME = "owner.lock"
STALE_LOCK_S = 120  # a lock older than this was left by a process killed inside the check
# squeue states of a job that may still write to the folder
LIVE_STATES = {"PENDING", "RUNNING", "CONFIGURING", "COMPLETING", "REQUEUED", "REQUEUE_FED",
               "REQUEUE_HOLD", "RESIZING", "SUSPENDED", "STOPPED", "SIGNALING", "STAGE_OUT",
               "RESV_DEL_HOLD", "SPECIAL_EXIT"}


class OwnedElsewhere(RuntimeError):
    """Another live job owns the folder."""


def _start_time(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (/proc/<pid>/stat field 22), or None."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]


def me(environ: Mapping[str, str] | None = None) -> dict:
    """This job's identity: its Slurm job id (none outside Slurm), host, pid and start time."""
    env = os.environ if environ is None else environ
    job = env.get("SLURM_JOB_ID") or None
    if job and env.get("SLURM_ARRAY_JOB_ID") and env.get("SLURM_ARRAY_TASK_ID"):
        job = f"{env['SLURM_ARRAY_JOB_ID']}_{env['SLURM_ARRAY_TASK_ID']}"
    pid = os.getpid()
    return {"slurm_job_id": job, "host": socket.gethostname(), "pid": pid,
            "pid_start": _start_time(pid), "since": time.strftime("%Y-%m-%dT%H:%M:%S%z")}


def slurm_job_state(job_id: str) -> str | None:
    """The job's state as squeue shows it; None when squeue no longer knows the job (ended more
    than MinJobAge ago) or cannot be asked."""
    if not shutil.which("squeue"):
        return None
    try:
        res = subprocess.run(["squeue", "-h", "-j", str(job_id), "-o", "%T"], capture_output=True,
                             text=True, timeout=60)
    except (OSError, subprocess.SubprocessError):
        return None
    states = res.stdout.split()
    return states[0] if res.returncode == 0 and states else None


def is_live(owner: Mapping, job_state: Callable[[str], str | None] = slurm_job_state) -> tuple[bool, str]:
    """(whether the owner may still write to the folder, why)."""
    job = owner.get("slurm_job_id")
    if job:
        state = job_state(str(job))
        if state is None and not shutil.which("squeue"):
            return True, f"Slurm job {job} cannot be checked here (no squeue)"
        if state in LIVE_STATES:
            return True, f"Slurm job {job} is {state}"
        return False, f"Slurm job {job} is {state or 'gone from the queue'}"
    if owner.get("host") != socket.gethostname():
        return True, f"a process on host {owner.get('host')} (pid {owner.get('pid')}) that cannot be checked from here"
    pid = owner.get("pid")
    if not isinstance(pid, int):
        return False, "no process recorded"
    start = _start_time(pid)
    if start is None or (owner.get("pid_start") and start != owner["pid_start"]):
        return False, f"process {pid} has ended"
    return True, f"process {pid} on this host is running"


def _same_owner(a: Mapping, b: Mapping) -> bool:
    """The same job: one Slurm job id (a requeued job's next window), or the same process."""
    if a.get("slurm_job_id") or b.get("slurm_job_id"):
        return a.get("slurm_job_id") == b.get("slurm_job_id")
    return (a.get("host"), a.get("pid"), a.get("pid_start")) == (b.get("host"), b.get("pid"), b.get("pid_start"))


@contextmanager
def _locked(folder: Path) -> Iterator[None]:
    lock = folder / LOCK_NAME
    deadline = time.time() + 2 * STALE_LOCK_S
    while True:
        try:
            lock.mkdir()
            break
        except FileExistsError:
            try:
                if time.time() - lock.stat().st_mtime > STALE_LOCK_S:
                    lock.rmdir()  # left by a process killed between mkdir and rmdir
                    continue
            except OSError:
                continue
            if time.time() > deadline:
                raise OwnedElsewhere(f"{lock} is held (another job is claiming {folder}); if no job is, remove it")
            time.sleep(0.2)
    try:
        yield
    finally:
        try:
            lock.rmdir()
        except OSError:
            pass


def read_owner(folder: str | Path) -> dict | None:
    path = Path(folder) / OWNER_NAME
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as e:
        log.warning("%s is unreadable (%s): taken as no owner", path, e)
        return None


def claim(folder: str | Path, what: str, identity: dict | None = None,
          job_state: Callable[[str], str | None] = slurm_job_state) -> dict:
    """Take ownership of ``folder`` (created if missing) for this job and return the claim;
    raise OwnedElsewhere, naming the owner, while another live job owns it. ``what`` names the
    folder's work in messages (e.g. "run ViT-B-32_2B_34B")."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    mine = identity or me()
    path = folder / OWNER_NAME
    with _locked(folder):
        owner = read_owner(folder)
        if owner is not None and not _same_owner(owner, mine):
            live, why = is_live(owner, job_state)
            if live:
                raise OwnedElsewhere(
                    f"{what}: {path} is owned by another job ({why}; host {owner.get('host')}, pid "
                    f"{owner.get('pid')}, since {owner.get('since')}): not started, the folder is left to it. "
                    f"Wait for that job, or stop it (scancel) and re-run; remove {path} only if that job is "
                    f"certainly gone")
            released = path.with_name(f"{OWNER_NAME}.{time.strftime('%Y%m%dT%H%M%S')}.released")
            os.replace(path, released)
            log.warning("%s: the previous owner's claim is taken over (%s); its record: %s", what, why, released)
        tmp = path.with_name(f"{OWNER_NAME}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(mine, indent=1) + "\n")
        os.replace(tmp, path)
    return mine


def release(folder: str | Path, claim_: Mapping) -> None:
    """Give the folder up if this job still owns it (a job that ends for good; a job requeued
    for its next window keeps it)."""
    folder = Path(folder)
    with _locked(folder):
        owner = read_owner(folder)
        if owner is not None and _same_owner(owner, claim_):
            (folder / OWNER_NAME).unlink(missing_ok=True)
