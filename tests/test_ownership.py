"""One owner per run folder (clipscale.ownership), the requeue check at a training job's start
and the refusal of a retry that cannot help (clipscale.train). The same on the real test Slurm:
tests/test_slurm.py::test_a_second_job_for_a_run_refuses_while_the_first_owns_it."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import pytest

from clipscale import grid, ownership, train


def job(job_id: str | None, pid: int = 1234) -> dict:
    return {"slurm_job_id": job_id, "host": socket.gethostname(), "pid": pid, "pid_start": None, "since": "t"}


def test_a_live_slurm_owner_keeps_the_folder_and_the_refusal_names_it(tmp_path):
    ownership.claim(tmp_path, "run a", job("101"), job_state=lambda j: "RUNNING")
    with pytest.raises(ownership.OwnedElsewhere, match=r"run a: .*owner\.json is owned by another job \(Slurm job "
                                                       r"101 is RUNNING"):
        ownership.claim(tmp_path, "run a", job("202"), job_state=lambda j: "RUNNING")
    assert json.loads((tmp_path / "owner.json").read_text())["slurm_job_id"] == "101"


@pytest.mark.parametrize("state", ["PENDING", "REQUEUED", "COMPLETING", "SUSPENDED"])
def test_a_queued_requeued_or_ending_owner_is_live(tmp_path, state):
    ownership.claim(tmp_path, "run a", job("101"), job_state=lambda j: state)
    with pytest.raises(ownership.OwnedElsewhere):
        ownership.claim(tmp_path, "run a", job("202"), job_state=lambda j: state)


@pytest.mark.parametrize("state", [None, "COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL"])
def test_a_dead_slurm_owner_is_taken_over_and_its_record_kept(tmp_path, state, monkeypatch):
    monkeypatch.setattr(ownership.shutil, "which", lambda name: "/usr/bin/" + name)
    ownership.claim(tmp_path, "run a", job("101"), job_state=lambda j: "RUNNING")
    ownership.claim(tmp_path, "run a", job("202"), job_state=lambda j: state)
    assert json.loads((tmp_path / "owner.json").read_text())["slurm_job_id"] == "202"
    (released,) = tmp_path.glob("owner.json.*.released")
    assert json.loads(released.read_text())["slurm_job_id"] == "101"


def test_the_same_job_in_its_next_window_takes_its_folder_back(tmp_path):
    """A requeued job keeps its Slurm job id: its next window is the same owner."""
    ownership.claim(tmp_path, "run a", job("101", pid=1), job_state=lambda j: "RUNNING")
    ownership.claim(tmp_path, "run a", job("101", pid=2), job_state=lambda j: "RUNNING")
    assert json.loads((tmp_path / "owner.json").read_text())["pid"] == 2


def test_a_local_owner_is_live_while_its_process_runs(tmp_path):
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        other = {**job(None, proc.pid), "pid_start": ownership._start_time(proc.pid)}
        ownership.claim(tmp_path, "run a", other)
        with pytest.raises(ownership.OwnedElsewhere, match=rf"process {proc.pid} on this host is running"):
            ownership.claim(tmp_path, "run a", {**job(None, os.getpid()), "pid_start": ownership._start_time(os.getpid())})
    finally:
        proc.kill()
        proc.wait()
    mine = ownership.claim(tmp_path, "run a", ownership.me({}))  # the process ended: taken over
    assert json.loads((tmp_path / "owner.json").read_text())["pid"] == mine["pid"] == os.getpid()
    ownership.release(tmp_path, mine)
    assert not (tmp_path / "owner.json").exists()


def test_a_reused_pid_is_not_taken_for_the_owner(tmp_path):
    ownership.claim(tmp_path, "run a", {**job(None, os.getpid()), "pid_start": "1"})  # another start time
    ownership.claim(tmp_path, "run a", ownership.me({}))


def test_a_slurm_owner_that_cannot_be_checked_is_not_overrun(tmp_path, monkeypatch):
    monkeypatch.setattr(ownership.shutil, "which", lambda name: None)  # no squeue on this host
    ownership.claim(tmp_path, "run a", job("101"), job_state=lambda j: None)
    with pytest.raises(ownership.OwnedElsewhere, match=r"Slurm job 101 cannot be checked here \(no squeue\)"):
        ownership.claim(tmp_path, "run a", job("202"), job_state=lambda j: None)


def test_an_owner_on_another_host_without_slurm_is_not_overrun(tmp_path):
    ownership.claim(tmp_path, "run a", {**job(None), "host": "elsewhere"})
    with pytest.raises(ownership.OwnedElsewhere, match="host elsewhere"):
        ownership.claim(tmp_path, "run a", ownership.me({}))


def test_release_leaves_another_owners_claim(tmp_path, monkeypatch):
    monkeypatch.setattr(ownership.shutil, "which", lambda name: "/usr/bin/" + name)
    first = ownership.claim(tmp_path, "run a", job("101"), job_state=lambda j: None)
    ownership.claim(tmp_path, "run a", job("202"), job_state=lambda j: None)
    ownership.release(tmp_path, first)
    assert json.loads((tmp_path / "owner.json").read_text())["slurm_job_id"] == "202"


def test_a_stale_claim_lock_is_broken(tmp_path):
    lock = tmp_path / ownership.LOCK_NAME
    lock.mkdir()
    old = os.stat(lock).st_mtime - 2 * ownership.STALE_LOCK_S
    os.utime(lock, (old, old))
    ownership.claim(tmp_path, "run a", job("101"), job_state=lambda j: None)
    assert not lock.exists()


RUN = grid.Run("vit-xs", "1k", 48_000, grid.COSINE)
HP = {"signal_lead_s": 300, "runtime": 60}


def test_a_job_that_can_requeue_itself_says_nothing(monkeypatch, caplog):
    monkeypatch.setenv("SLURM_JOB_ID", "7")
    assert train.check_requeue(RUN, HP, {"JobId": "7", "Requeue": "1"}) is True
    assert "cannot requeue" not in caplog.text


@pytest.mark.parametrize("fields", [{"Requeue": "0"}, {}], ids=["requeue-off", "no-answer"])
def test_a_job_that_cannot_requeue_says_so_at_once_and_its_window_ends_cleanly(monkeypatch, caplog, tmp_path, fields):
    monkeypatch.setenv("SLURM_JOB_ID", "7")
    monkeypatch.chdir(tmp_path)
    assert train.check_requeue(RUN, HP, fields) is False
    assert "Slurm job 7 cannot requeue itself" in caplog.text and "Snakemake's retry resumes it" in caplog.text
    (tmp_path / "results").mkdir()
    train.run_dir(RUN).mkdir(parents=True)
    (train.run_dir(RUN) / train.ATTEMPTS_NAME).write_text(json.dumps({"id": 1, "ended": "signal SIGUSR1", "steps": 5}) + "\n")
    called = []
    monkeypatch.setattr(train.launcher, "requeue_this_job", lambda job: called.append(job))
    with pytest.raises(train.TrainingError, match="cannot requeue itself: Snakemake's retry resumes there") as e:
        train.end_of_window(RUN, {**HP, "requeue": False}, None)
    assert not isinstance(e.value, train.Requeued) and not called


def test_outside_slurm_there_is_nothing_to_check(monkeypatch):
    monkeypatch.delenv("SLURM_JOB_ID", raising=False)
    assert train.check_requeue(RUN, HP) is None


def test_a_third_attempt_after_a_failure_without_progress_is_refused(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    train.run_dir(RUN).mkdir(parents=True)
    path = train.run_dir(RUN) / train.ATTEMPTS_NAME
    path.write_text(json.dumps({"id": 1, "ended": "error: bad flag", "steps": 0}) + "\n")
    train.refuse_hopeless(RUN, 2)  # Snakemake's first retry still runs
    with pytest.raises(train.TrainingError, match=r"not started again \(Snakemake's attempt 3\).*error: bad flag"):
        train.refuse_hopeless(RUN, 3)
    path.write_text(json.dumps({"id": 2, "ended": "signal SIGUSR1", "steps": 40}) + "\n")
    train.refuse_hopeless(RUN, 5)  # windows that progress go on


def test_retries_cover_the_expected_windows_of_the_paper_grid():
    from clipscale import config as config_mod, resources

    paper = config_mod.load("config/paper.yaml")
    windows = {run.name: resources.expected_windows(paper, run) for run in grid.runs(paper)}
    assert resources.train_retries(paper) == max(windows.values()) > 1
    assert resources.train_retries(config_mod.load("config/config.yaml")) == 1


def test_a_fine_tuning_job_refuses_while_another_live_job_owns_its_folder(tmp_path):
    """A second fine-tuning job for one checkpoint and protocol (a restarted Snakemake while the
    first job still runs) stops before it touches the folder: no failed result over the first's."""
    from clipscale.finetune import FinetuneError, run_job

    out = tmp_path / "vit-xs" / "3k" / "2k" / "classification" / "result.json"
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        ownership.claim(out.parent, "fine-tuning", {**job(None, proc.pid), "pid_start": ownership._start_time(proc.pid)})
        with pytest.raises(FinetuneError, match=rf"owned by another job .*process {proc.pid} on this host is running"):
            run_job({}, "vit-xs", "3k", "2k", "classification", out)
    finally:
        proc.kill()
        proc.wait()
    assert sorted(p.name for p in out.parent.iterdir()) == ["owner.json"]
