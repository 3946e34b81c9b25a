"""The project's Slurm profile, end to end, on a real single-node Slurm.

The `slurm` tests start munged + slurmctld + slurmd with scripts/slurm/start_slurm.sh (root and the
Debian packages needed; installed with apt-get when missing), run small workflows with
``snakemake --profile profiles/slurm`` and stop every daemon they started. Without root or apt
they skip -- except in CI (CI=true) or with CLIPSCALE_REQUIRE_SLURM=1, where they fail instead.

Evidence that a job went through Slurm does not need accounting (no slurmdbd here): the job
ids snakemake reports, the jobcomp file (one line per finished job, Slurm state and exit code),
squeue (finished jobs stay visible for MinJobAge=600 s), the plugin's per-job logs under
.snakemake/slurm_logs, and SLURM_JOB_ID seen inside the jobs.

Run:  .venv/bin/pytest -m slurm tests/test_slurm.py    (profile checks without Slurm: -m "not slurm")

``run_profile(workdir, targets, configfile, extra_args)`` runs snakemake with the profile under a
time limit (SIGINT, which makes snakemake scancel its jobs) for other tests to reuse.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import textwrap
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import pytest
import yaml

from clipscale import launch
from conftest import default_sigint, scratch

ROOT = Path(__file__).resolve().parents[1]
PROFILE = ROOT / "profiles" / "slurm"
START = ROOT / "scripts" / "slurm" / "start_slurm.sh"
STOP = ROOT / "scripts" / "slurm" / "stop_slurm.sh"
SNAKEMAKE = str(Path(sys.executable).parent / "snakemake")
PY = sys.executable

# The profile polls at the plugin's pace for real clusters (first check 40 s after submission,
# then +10 s per idle check); tests poll every second.
FAST_POLL = ["--slurm-init-seconds-before-status-checks", "1", "--seconds-between-status-checks", "1"]


def _require_slurm() -> bool:
    return os.environ.get("CLIPSCALE_REQUIRE_SLURM") == "1" or os.environ.get("CI", "").lower() in ("1", "true")


def _skip_or_fail(reason: str):
    if _require_slurm():
        pytest.fail(f"Slurm tests are required here (CI / CLIPSCALE_REQUIRE_SLURM=1) but: {reason}")
    pytest.skip(reason)


# ---------------------------------------------------------------------------------------------
# the cluster
# ---------------------------------------------------------------------------------------------


@dataclass
class SlurmCluster:
    base: Path
    env: dict
    started_by_us: bool

    @property
    def jobcomp_file(self) -> Path:
        return self.base / "log" / "jobcomp.txt"

    def jobcomp(self) -> dict[str, dict[str, str]]:
        """Slurm job id -> fields of its jobcomp line (JobState, ExitCode, Name, Tres, ...)."""
        out = {}
        if self.jobcomp_file.exists():
            for line in self.jobcomp_file.read_text().splitlines():
                rec = dict(re.findall(r"(\w+)=(\S*)", line))
                if "JobId" in rec:
                    out[rec["JobId"]] = rec
        return out

    def wait_jobcomp(self, ids: Sequence[str], timeout_s: float = 30) -> dict[str, dict[str, str]]:
        """jobcomp lines are written when a job ends; squeue can report COMPLETED a little earlier."""
        deadline = time.time() + timeout_s
        while True:
            recs = self.jobcomp()
            if all(i in recs for i in ids) or time.time() > deadline:
                return recs
            time.sleep(0.5)

    def squeue(self, name: str) -> dict[str, str]:
        """Slurm job id -> state, for the jobs named ``name`` (the plugin's run id)."""
        res = subprocess.run(
            ["squeue", "--states=all", "--noheader", "--format=%i|%T", "--name", name],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert res.returncode == 0, res.stderr
        return dict(line.split("|", 1) for line in res.stdout.split())


@pytest.fixture(scope="session")
def slurm_cluster(tmp_path_factory):
    """A running single-node Slurm for the session; stops the daemons it started, always."""
    if os.geteuid() != 0:
        _skip_or_fail("needs root: start_slurm.sh installs Debian packages and runs slurmctld/slurmd")
    if not shutil.which("apt-get") and not shutil.which("sbatch"):
        _skip_or_fail("no apt-get to install Slurm (Debian packages slurmctld slurmd slurm-client munge)")
    base = Path(os.environ.get("SLURM_TEST_BASE") or tmp_path_factory.mktemp("slurm"))
    env = {**os.environ, "SLURM_TEST_BASE": str(base)}
    # the 2-task test jobs need 2 CPUs on the node: on a 1-CPU machine advertise 2 (oversubscribed)
    env.setdefault("SLURM_TEST_CPUS", str(max(2, len(os.sched_getaffinity(0)))))
    ctld_pid = base / "run" / "slurmctld.pid"
    already_up = ctld_pid.exists() and _pid_alive(ctld_pid)
    t0 = time.time()
    try:
        res = subprocess.run(["bash", str(START)], env=env, capture_output=True, text=True, timeout=900)
        if res.returncode in (2, 3):
            _skip_or_fail(f"start_slurm.sh exit {res.returncode}: {res.stderr.strip()[-2000:]}")
        assert res.returncode == 0, f"start_slurm.sh failed ({res.returncode}):\n{res.stdout}\n{res.stderr}"
        print(f"\n[slurm] up in {time.time() - t0:.1f} s (base {base})")
        yield SlurmCluster(base=base, env=env, started_by_us=not already_up)
    finally:
        if not already_up:
            stop = subprocess.run(["bash", str(STOP)], env=env, capture_output=True, text=True, timeout=300)
            print(f"[slurm] stop_slurm.sh exit {stop.returncode}\n{stop.stdout}{stop.stderr}")


def _pid_alive(pidfile: Path) -> bool:
    try:
        os.kill(int(pidfile.read_text().strip()), 0)
        return True
    except (OSError, ValueError):
        return False


# ---------------------------------------------------------------------------------------------
# running snakemake with the profile
# ---------------------------------------------------------------------------------------------


@dataclass
class ProfileRun:
    cmd: list[str]
    returncode: int
    output: str  # stdout and stderr of snakemake, interleaved
    seconds: float
    timed_out: bool
    run_id: str | None = None  # the plugin's Slurm job name for this run
    jobs: dict[str, str] = field(default_factory=dict)  # Slurm job id -> its .snakemake/slurm_logs file
    leftover_jobs: list[str] = field(default_factory=list)  # still queued/running after a time-out

    def rule_of(self, job_id: str) -> str:
        """Rule of a submitted job, from the log path .../slurm_logs/rule_<rule>/..."""
        m = re.search(r"/rule_([^/]+)/", self.jobs[job_id])
        assert m, self.jobs[job_id]
        return m.group(1)

    def jobs_of(self, rule: str) -> list[str]:
        return [j for j in self.jobs if self.rule_of(j) == rule]


def profile_command(
    workdir: Path | str,
    targets: Sequence[str] = (),
    configfile: Path | str | None = None,
    extra_args: Sequence[str] = (),
    *,
    snakefile: Path | str | None = None,
    fast_poll: bool = True,
) -> list[str]:
    """``snakemake --profile profiles/slurm ...`` for ``workdir`` (no time limit)."""
    workdir = Path(workdir)
    if snakefile is None:
        snakefile = workdir / "Snakefile" if (workdir / "Snakefile").exists() else ROOT / "Snakefile"
    cmd = [SNAKEMAKE, "--profile", str(PROFILE), "--snakefile", str(snakefile), "--directory", str(workdir)]
    if fast_poll:
        cmd += FAST_POLL
    cmd = [*cmd, *extra_args, *targets]
    if configfile is not None:  # last: --configfile takes every value that follows it
        cmd += ["--configfile", str(configfile)]
    return cmd


def _parse_run(run: ProfileRun) -> ProfileRun:
    m = re.search(r"SLURM run ID: (\S+)", run.output)
    run.run_id = m.group(1) if m else None
    for jid, log in re.findall(r"has been submitted with SLURM jobid (\d+) \(log: (.+?)\)\.", run.output):
        run.jobs[jid] = log
    return run


def _cancel_leftovers(run: ProfileRun) -> list[str]:
    """scancel jobs of this run still pending/running: snakemake (plugin 2.6.1) cancels on SIGINT
    only the jobs it has registered, so a job whose sbatch was in flight survives."""
    if not run.run_id or not shutil.which("squeue"):
        return []
    res = subprocess.run(["squeue", "--noheader", "--format=%i", "--states=PENDING,RUNNING,CONFIGURING",
                          "--name", run.run_id], capture_output=True, text=True, timeout=30)
    left = res.stdout.split()
    if left:
        subprocess.run(["scancel", *left], capture_output=True, timeout=30)
    return left


def run_profile(
    workdir: Path | str,
    targets: Sequence[str] = (),
    configfile: Path | str | None = None,
    extra_args: Sequence[str] = (),
    *,
    timeout_s: float = 600,
    snakefile: Path | str | None = None,
    fast_poll: bool = True,
    env: dict | None = None,
) -> ProfileRun:
    """``snakemake --profile profiles/slurm`` in ``workdir``, stopped with SIGINT after timeout_s.

    The Snakefile is ``snakefile``, else ``workdir/Snakefile`` if present, else the project's.
    On SIGINT snakemake scancels the jobs it submitted at once, then waits out its current
    status-poll interval before exiting; 60 s later ``timeout`` sends SIGKILL. A job whose sbatch
    was in flight at the SIGINT is not cancelled by snakemake: jobs of a timed-out run still queued
    or running afterwards are cancelled here and listed in ``leftover_jobs``.
    """
    # --foreground: SIGINT to snakemake only. Without it timeout signals the whole process group,
    # snakemake gets SIGINT twice, and the second interrupts its scancel, leaving jobs running.
    cmd = ["timeout", "--foreground", "-s", "INT", "-k", "60", str(int(timeout_s))]
    cmd += profile_command(workdir, targets, configfile, extra_args, snakefile=snakefile, fast_poll=fast_poll)
    t0 = time.time()
    res = subprocess.run(cmd, cwd=workdir, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    run = _parse_run(ProfileRun(cmd, res.returncode, res.stdout, time.time() - t0, res.returncode in (124, 137)))
    if run.timed_out:
        run.leftover_jobs = _cancel_leftovers(run)
    return run


def _explain(run: ProfileRun) -> str:
    return f"command: {' '.join(run.cmd)}\nexit {run.returncode} after {run.seconds:.0f} s\n{run.output[-6000:]}"


def _write_workflow(workdir: Path, snakefile: str) -> None:
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "Snakefile").write_text(textwrap.dedent(snakefile))


# ---------------------------------------------------------------------------------------------
# tests with a real Slurm
# ---------------------------------------------------------------------------------------------

GOOD_WORKFLOW = f"""
    PY = {PY!r}

    localrules: all

    rule all:
        input: "out/a.txt", "out/b.txt", "out/train.json", "out/launch.json"

    # single-task jobs: the plugin runs the rule inside `srun -n1`
    rule one:
        output: "out/{{name}}.txt"
        log: "logs/one_{{name}}.log"
        resources: mem_mb=200, runtime=5
        shell: "(echo $SLURM_JOB_ID; hostname) > {{output}} 2> {{log}}"

    # shaped like the pipeline's training rule: 2 tasks started with {{resources.mpi}}
    rule train:
        output: "out/train.json"
        log: "logs/train.log"
        resources: nodes=1, tasks=2, cpus_per_task=1, gpu=0, mpi="srun", mem_mb=1500, runtime=7
        shell:
            "{{resources.mpi}} -n {{resources.tasks}} {{PY}} -m clipscale.launch check --timeout 60"
            " --out out/train_rank{{{{rank}}}}.json > {{log}} 2>&1"
            " && cat out/train_rank0.json out/train_rank1.json > {{output}}"

    # the srun command that clipscale.launch builds, inside a 2-task job
    rule launch_check:
        output: "out/launch.json"
        log: "logs/launch_check.log"
        resources: tasks=2, mpi="srun", cpus_per_task=1, mem_mb=1000, runtime=5
        shell:
            "eval $({{PY}} -m clipscale.launch command --nproc {{resources.tasks}}"
            " -- -m clipscale.launch check --timeout 60 --out out/launch_rank{{{{rank}}}}.json) > {{log}} 2>&1"
            " && cat out/launch_rank0.json out/launch_rank1.json > {{output}}"
"""


@pytest.mark.slurm
def test_profile_runs_jobs_through_sbatch(slurm_cluster, tmp_path):
    wd = tmp_path / "good"
    _write_workflow(wd, GOOD_WORKFLOW)
    run = run_profile(wd, timeout_s=300)
    assert run.returncode == 0, _explain(run)
    assert run.run_id and run.run_id.startswith("clipscale_"), _explain(run)  # slurm-jobname-prefix
    # every non-local job went through sbatch: 2 x one, train, launch_check
    assert len(run.jobs) == 4, _explain(run)
    assert sorted(run.rule_of(j) for j in run.jobs) == ["launch_check", "one", "one", "train"]

    # accounting-free evidence: jobcomp (Slurm's own record of each finished job) ...
    recs = slurm_cluster.wait_jobcomp(list(run.jobs))
    for jid in run.jobs:
        assert jid in recs, f"job {jid} missing from {slurm_cluster.jobcomp_file}"
        assert recs[jid]["Name"] == run.run_id
        assert recs[jid]["JobState"] == "COMPLETED" and recs[jid]["ExitCode"] == "0:0", recs[jid]
    # ... squeue (finished jobs stay listed for MinJobAge) ...
    assert slurm_cluster.squeue(run.run_id) == {j: "COMPLETED" for j in run.jobs}
    # ... the plugin's per-job Slurm logs (kept by slurm-keep-successful-logs) ...
    for jid, log in run.jobs.items():
        assert Path(log).is_file() and Path(log).parent.is_relative_to(wd / ".snakemake" / "slurm_logs")
        assert "Finished jobid: 0" in Path(log).read_text(), log
    # ... and the jobs saw their own SLURM_JOB_ID
    seen = {(wd / f"out/{n}.txt").read_text().split()[0] for n in "ab"}
    assert seen == set(run.jobs_of("one"))

    # resources reached sbatch: the profile's train block and launch_check's own
    (train_id,) = run.jobs_of("train")
    assert "cpu=2" in recs[train_id]["Tres"] and "mem=1500M" in recs[train_id]["Tres"], recs[train_id]
    assert recs[train_id]["TimeLimit"] == "7"
    for jid in run.jobs_of("one"):
        assert "mem=200M" in recs[jid]["Tres"] and recs[jid]["TimeLimit"] == "5", recs[jid]

    # the 2-task jobs: two ranks that met at the same MASTER_ADDR:MASTER_PORT and all-reduced
    for rule, out in (("train", "out/train.json"), ("launch_check", "out/launch.json")):
        ranks = [json.loads(line) for line in (wd / out).read_text().splitlines()]
        assert sorted(r["rank"] for r in ranks) == [0, 1], ranks
        assert {r["world_size"] for r in ranks} == {2}
        assert {r["launcher"] for r in ranks} == {"slurm"}
        assert {r["rank_sum"] for r in ranks} == {1}
        assert len({(r["master_addr"], r["master_port"]) for r in ranks}) == 1
        (jid,) = run.jobs_of(rule)
        ports = {launch.port_for_job(jid, step) for step in range(4)}
        assert ranks[0]["master_port"] in ports, (ranks, jid)


FAILING_WORKFLOW = """
    localrules: all

    rule all:
        input: "out/ok.txt", "out/fail.txt"

    rule ok:
        output: "out/ok.txt"
        log: "logs/ok.log"
        resources: mem_mb=200, runtime=5
        shell: "echo fine > {output} 2> {log}"

    rule fail:
        output: "out/fail.txt"
        log: "logs/fail.log"
        resources: mem_mb=200, runtime=5
        shell: "echo 'clipscale test: failing on purpose' > {log}; exit 3"
"""


@pytest.mark.slurm
def test_failing_job_is_reported(slurm_cluster, tmp_path):
    wd = tmp_path / "failing"
    _write_workflow(wd, FAILING_WORKFLOW)
    run = run_profile(wd, timeout_s=300)
    assert not run.timed_out, _explain(run)
    assert run.returncode != 0, _explain(run)
    assert "Error in rule fail" in run.output, _explain(run)
    # keep-going: the independent job still ran and succeeded
    assert (wd / "out/ok.txt").read_text().strip() == "fine"
    assert not (wd / "out/fail.txt").exists()
    # retries: 1 -> the failing job was submitted twice, both failed in Slurm
    fail_ids = run.jobs_of("fail")
    assert len(fail_ids) == 2, _explain(run)
    recs = slurm_cluster.wait_jobcomp(fail_ids)
    for jid in fail_ids:
        assert recs[jid]["JobState"] == "FAILED" and recs[jid]["ExitCode"] != "0:0", recs.get(jid)
        slurm_log = Path(run.jobs[jid]).read_text()
        assert "Error in rule fail" in slurm_log and "exit status 3" in slurm_log, slurm_log[-3000:]
    assert (wd / "logs/fail.log").read_text().strip() == "clipscale test: failing on purpose"
    assert f"SLURM-job '{fail_ids[0]}' failed" in run.output, _explain(run)
    (ok_id,) = run.jobs_of("ok")
    assert recs.get(ok_id, slurm_cluster.wait_jobcomp([ok_id])[ok_id])["JobState"] == "COMPLETED"


HANGING_WORKFLOW = """
    rule hang:
        output: "out/never.txt"
        log: "logs/hang.log"
        resources: mem_mb=200, runtime=10
        shell: "sleep 600 > {log} 2>&1; touch {output}"
"""


@pytest.mark.slurm
def test_sigint_cancels_running_jobs(slurm_cluster, tmp_path):
    """SIGINT (what `timeout -s INT` sends) scancels the running job at once; snakemake exits
    when its current status poll ends.

    The SIGINT is sent between two of the plugin's status checks: during one (2.6.1 takes the
    jobs out of its list of active jobs while it queries them) snakemake scancels nothing and the
    job runs on (README, pitfalls of the plugin); on a loaded machine a check lasts seconds.
    Every other wait is on a condition, with deadlines a loaded machine meets."""
    wd = tmp_path / "hanging"
    _write_workflow(wd, HANGING_WORKFLOW)
    out = wd / "snakemake.out"
    # --verbose: the plugin's debug lines say when a status check has ended
    with open(out, "w") as sink:
        proc = subprocess.Popen(profile_command(wd, extra_args=["--verbose"]), cwd=wd, stdout=sink,
                                stderr=subprocess.STDOUT, preexec_fn=default_sigint)
    check_ended = "active jobs with external IDs"  # the last line of a check, before its jobs are back

    def wait_for(condition, timeout_s: float, what: str):
        deadline = time.time() + timeout_s
        while not (value := condition()):
            assert proc.poll() is None, f"snakemake exited while waiting until {what}:\n{out.read_text()[-6000:]}"
            if time.time() > deadline:
                pytest.fail(f"not within {timeout_s} s: {what}\n{out.read_text()[-6000:]}")
            time.sleep(0.2)
        return value

    try:
        def running():  # the job is registered with snakemake and running
            run = _parse_run(ProfileRun([], -1, out.read_text(), 0.0, False))
            if run.jobs and slurm_cluster.squeue(run.run_id).get(next(iter(run.jobs))) == "RUNNING":
                return run
        run = wait_for(running, 300, "the job runs")
        (jid,) = run.jobs
        checks = out.read_text().count(check_ended)
        # the next check ends (one starts at most 180 s after the last), then the plugin sleeps
        # >= 11 s (init 1 s + 10 s per check in which no job ended); 2 s in, the SIGINT is clear of both
        wait_for(lambda: out.read_text().count(check_ended) > checks, 240, "a status check ends")
        time.sleep(2)
        t0 = time.time()
        proc.send_signal(signal.SIGINT)
        # the scancel comes at once; snakemake itself exits when its current status-poll interval
        # ends, which the plugin lengthens by 10 s per poll in which no job ended, up to 180 s
        # (2.6.1, not configurable): a job that took long to start makes a long interval
        cancel_s = None
        while time.time() - t0 < 60 and cancel_s is None:
            # COMPLETING: cancelled, its processes being killed (up to Slurm's KillWait on a
            # loaded machine: seen in a CI run, the job ended CANCELLED 60 s after its start); the
            # final state is checked as CANCELLED below
            if slurm_cluster.squeue(run.run_id).get(jid) in ("CANCELLED", "COMPLETING", None):
                cancel_s = time.time() - t0
            time.sleep(0.5)
        try:
            rc = proc.wait(timeout=180 + 60)
        except subprocess.TimeoutExpired:
            pytest.fail(f"snakemake still running 240 s after SIGINT (job cancelled after {cancel_s} s):\n"
                        f"{out.read_text()[-6000:]}")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        leftover = _cancel_leftovers(_parse_run(ProfileRun([], -1, out.read_text(), 0.0, False)))
    full = out.read_text()
    text = full[-6000:]
    assert rc != 0 and "Terminating processes on user request" in full, text
    assert cancel_s is not None and cancel_s < 30, f"the job was not cancelled within 30 s of SIGINT\n{text}"
    recs = slurm_cluster.wait_jobcomp([jid], timeout_s=120)
    assert recs[jid]["JobState"] == "CANCELLED", recs.get(jid)
    # jobcomp is written at the scancel; squeue shows COMPLETING until the job's processes are gone
    deadline = time.time() + 120
    while slurm_cluster.squeue(run.run_id).get(jid) == "COMPLETING" and time.time() < deadline:
        time.sleep(0.5)
    assert slurm_cluster.squeue(run.run_id) == {jid: "CANCELLED"}
    assert not leftover, f"jobs left running after SIGINT (cancelled now): {leftover}\n{text}"


@pytest.mark.slurm
def test_run_profile_time_limit(slurm_cluster, tmp_path):
    """run_profile's limit: SIGINT after timeout_s, the run reported as timed out, nothing left."""
    wd = tmp_path / "limit"
    _write_workflow(wd, HANGING_WORKFLOW)
    run = run_profile(wd, timeout_s=25)
    assert run.timed_out and run.seconds < 25 + 60 + 5, _explain(run)
    assert run.run_id and len(run.jobs) == 1, _explain(run)
    assert "Terminating processes on user request" in run.output, _explain(run)
    # cancelled: by snakemake, or by run_profile's clean-up where the SIGINT came during one of the
    # plugin's status checks (2.6.1 then cancels nothing: README, plugin pitfalls); never left
    (jid,) = run.jobs
    assert set(run.leftover_jobs) <= {jid}, _explain(run)
    assert slurm_cluster.wait_jobcomp([jid], timeout_s=120)[jid]["JobState"] == "CANCELLED"
    still = subprocess.run(["squeue", "-h", "-j", jid, "-t", "PENDING,RUNNING"], capture_output=True, text=True)
    assert not still.stdout.strip(), still.stdout


# ---------------------------------------------------------------------------------------------
# profile checks that need no Slurm
# ---------------------------------------------------------------------------------------------


def _profile() -> dict:
    return yaml.safe_load((PROFILE / "config.yaml").read_text())


def _plugin_settings() -> set[str]:
    from snakemake_executor_plugin_slurm import ExecutorSettings

    return {f.name for f in ExecutorSettings.__dataclass_fields__.values()}


def test_profile_options_exist_in_plugin():
    """Every slurm-* key of the profile is a setting of the installed plugin (typos fail here)."""
    settings = _plugin_settings()
    keys = [k for k in _profile() if k.startswith("slurm-")]
    assert keys, "profile sets no slurm-* option"
    for k in keys:
        assert k.removeprefix("slurm-").replace("-", "_") in settings, f"{k} is not a plugin setting"
    prof = _profile()
    assert prof["executor"] == "slurm"
    assert prof["slurm-status-command"] == "squeue"
    assert prof["retries"] >= 1 and prof["rerun-incomplete"] is True


def _dry_run_jobs(output: str) -> list[tuple[str, dict[str, str]]]:
    """(rule, resources) of every job in a dry run's output."""
    jobs = []
    for m in re.finditer(r"^(?:local)?rule (\w+):\n((?:[ \t]+.*\n?)*)", output, re.M):
        res = re.search(r"^\s+resources: (.*)$", m.group(2), re.M)
        items = res.group(1).split(", ") if res else []
        jobs.append((m.group(1), dict(i.split("=", 1) for i in items if "=" in i)))
    return jobs


def test_profile_resources_in_dry_run(tmp_path):
    """The profile parses; partition/account come from the environment; defaults scale with attempt."""
    _write_workflow(
        tmp_path,
        """
        rule all:
            input: "t.txt", "e.txt"
        rule t:
            output: "t.txt"
            shell: "touch {output}"
        rule e:
            output: "e.txt"
            resources: runtime=7, mem_mb=300
            shell: "touch {output}"
        """,
    )
    env = {**os.environ, "CLIPSCALE_SLURM_PARTITION": "gpu-test", "CLIPSCALE_SLURM_ACCOUNT": "proj-test"}
    res = subprocess.run(
        [SNAKEMAKE, "--profile", str(PROFILE), "-n", "--directory", str(tmp_path)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert res.returncode == 0, res.stdout + res.stderr
    jobs = dict(_dry_run_jobs(res.stdout + res.stderr))
    assert jobs["t"]["slurm_partition"] == "gpu-test" and jobs["t"]["slurm_account"] == "proj-test"
    assert jobs["t"]["runtime"] == "30" and jobs["t"]["mem_mb"] == "2000"  # defaults, attempt 1
    assert jobs["e"]["runtime"] == "7" and jobs["e"]["mem_mb"] == "300"  # the rule's own win
    # without the variables the partition is left to Slurm (the plugin uses the default one)
    env.pop("CLIPSCALE_SLURM_PARTITION")
    res = subprocess.run(
        [SNAKEMAKE, "--profile", str(PROFILE), "-n", "--directory", str(tmp_path)],
        cwd=tmp_path, capture_output=True, text=True, env=env, timeout=120,
    )
    assert res.returncode == 0, res.stdout + res.stderr
    assert dict(_dry_run_jobs(res.stdout + res.stderr))["t"]["slurm_partition"] == ""


def _profile_rule_names() -> set[str]:
    """Rules named in set-resources, active or in the commented examples."""
    text = (PROFILE / "config.yaml").read_text()
    section = text[text.index("\nset-resources:"):]
    names = set(re.findall(r"^\s*#?\s*(\w+):\s*(?:#.*)?$", section, re.M))
    return names | set(_profile().get("set-resources") or {})


def _pipeline_ready():
    if not (ROOT / "Snakefile").exists():
        pytest.skip("the pipeline's Snakefile is not there yet")


def test_profile_rules_exist_in_pipeline():
    """set-resources names rules of the real pipeline (snakemake ignores unknown rule names)."""
    _pipeline_ready()
    res = subprocess.run(
        [SNAKEMAKE, "--list-rules", "--snakefile", str(ROOT / "Snakefile")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert res.returncode == 0, res.stdout + res.stderr
    rules = set(res.stdout.split())
    names = _profile_rule_names()
    assert "train" in names
    missing = names - rules
    assert not missing, f"profiles/slurm/config.yaml set-resources names unknown rules {sorted(missing)}"


@pytest.mark.parametrize("configfile", ["config/config.yaml", "config/paper.yaml"])
def test_pipeline_jobs_are_submittable(configfile, tmp_path):
    """Every job of the pipeline, as the profile would submit it, passes the plugin's checks.

    snakemake-executor-plugin-slurm 2.6.1 raises inside its submission thread for mpi jobs with
    tasks < 2, and that error is lost: the run then waits forever. It reads GPUs only from `gpu`
    (or gres/gpu_model): a `gpus` resource never reaches sbatch. With `gpu` it also passes
    --ntasks-per-gpu (tasks_per_gpu, else tasks), which must agree with --ntasks and --gpus.
    """
    _pipeline_ready()
    if not (ROOT / configfile).exists():
        pytest.skip(f"{configfile} is not there yet")
    from clipscale import config as cs_config
    from clipscale import standin

    # empty stand-ins for the paper's pool and test sets: the DAG only lists and checks them
    cfg = cs_config.validate(yaml.safe_load((ROOT / configfile).read_text()))
    overrides = standin.write(cfg, tmp_path)
    res = subprocess.run(
        [SNAKEMAKE, "-n", "--forceall", "--profile", str(PROFILE), "--configfile", configfile, str(overrides)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert res.returncode == 0, (res.stdout + res.stderr)[-5000:]
    jobs = _dry_run_jobs(res.stdout + res.stderr)
    assert jobs, "no jobs in the dry run"
    problems = set()
    for rule, r in jobs:
        if r.get("mpi"):
            tasks = int(r.get("tasks") or 0)
            per_node = int(r.get("tasks_per_node") or 0)
            if tasks < 2 and per_node < 2:
                problems.add(f"{rule}: mpi={r['mpi']} with tasks={tasks} (plugin needs > 1; run hangs)")
        if int(r.get("gpus") or 0) > 0 and not r.get("gpu"):
            problems.add(f"{rule}: gpus={r['gpus']} is not read by the slurm plugin (use gpu=)")
        gpu, tasks = int(r.get("gpu") or 0), int(r.get("tasks") or 1)
        if gpu > 0:
            # the plugin adds --ntasks-per-gpu=(tasks_per_gpu, else tasks) next to --gpus=gpu
            per_gpu = int(r["tasks_per_gpu"]) if r.get("tasks_per_gpu") not in (None, "") else tasks
            if per_gpu >= 1 and per_gpu * gpu != tasks:
                problems.add(f"{rule}: --gpus={gpu} --ntasks-per-gpu={per_gpu} --ntasks={tasks} disagree"
                             " (set tasks_per_gpu = tasks / gpu)")
        for key in ("runtime", "mem_mb"):
            if not r.get(key):
                problems.add(f"{rule}: no {key}")
    assert not problems, "\n".join(sorted(problems))


def _dry_run_jobs_with_wildcards(output: str) -> list[tuple[str, dict[str, str], dict[str, str], int]]:
    """(rule, wildcards, resources, threads) of every job in a dry run's output."""
    jobs = []
    for m in re.finditer(r"^(?:local)?rule (\w+):\n((?:[ \t]+.*\n?)*)", output, re.M):
        found = {k: re.search(rf"^\s+{k}: (.*)$", m.group(2), re.M) for k in ("resources", "wildcards", "threads")}
        def items(key):
            return dict(i.split("=", 1) for i in found[key].group(1).split(", ") if "=" in i) if found[key] else {}
        jobs.append((m.group(1), items("wildcards"), items("resources"),
                     int(found["threads"].group(1)) if found["threads"] else 1))
    return jobs


def test_every_job_of_the_papers_grid_has_the_shape_its_processes_need(tmp_path):
    """The sbatch line of every job of config/paper.yaml, built by the plugin's own functions:
    GPUs per node (--gres=gpu:G), never a total (--gpus) nor --ntasks-per-gpu; a training job's
    --nodes and --ntasks-per-node are what it starts (srun: ranks = nodes x processes per node,
    each on its GPU), with its walltime warning, requeue and appended log."""
    _pipeline_ready()
    from types import SimpleNamespace

    from snakemake_executor_plugin_slurm.submit_string import get_submit_command
    from snakemake_executor_plugin_slurm.utils import set_gres_string
    from snakemake_executor_plugin_slurm.validation import validate_slurm_extra

    from clipscale import config as cs_config
    from clipscale import grid, standin

    class _Res(dict):
        __getattr__ = dict.get

    paper = cs_config.load(ROOT / "config" / "paper.yaml")
    overrides = standin.write(paper, tmp_path)
    res = subprocess.run(
        [SNAKEMAKE, "-n", "--forceall", "--profile", str(PROFILE), "--configfile", "config/paper.yaml", str(overrides)],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
    )
    assert res.returncode == 0, (res.stdout + res.stderr)[-5000:]
    jobs = _dry_run_jobs_with_wildcards(res.stdout + res.stderr)
    seen, problems = set(), []
    for rule, wildcards, r, threads in jobs:
        typed = {k: int(v) if re.fullmatch(r"-?\d+", v) else v.strip("'\"") for k, v in r.items()}
        fake = SimpleNamespace(resources=_Res(typed), threads=threads)
        params = {"run_uuid": "u", "slurm_logfile": "log", "comment_str": "c", "account": "", "partition": "",
                  "workdir": "."}
        call = get_submit_command(fake, params) + set_gres_string(fake)
        if "--gpus" in call or "--ntasks-per-gpu" in call:
            problems.append(f"{rule}: a GPU total or tasks per GPU: {call}")
        if rule not in ("train", "train_segment"):
            continue
        validate_slurm_extra(fake)
        run = grid.Run.from_wildcards(wildcards["model"], wildcards["scale"], wildcards["samples"])
        hp = grid.hparams(paper, run)
        nodes, per_node, gpus = hp["nodes"], hp["nproc"], hp["gpus_per_node"]
        want = [f"--nodes={nodes}", f"--gres=gpu:{gpus}", f"--cpus-per-task={hp['threads']}",
                f"--signal=USR1@{hp['signal_lead_s']}", "--requeue", "--open-mode=append",
                f"--ntasks-per-node={per_node}" if per_node > 1 else f"--ntasks={nodes}"]
        problems += [f"{run.name}: no {w} in {call}" for w in want if w not in call.split()]
        srun = launch.launch_command(per_node, nodes, under_slurm=True, cpus_per_task=hp["threads"], gpus=True)
        if f"--ntasks={hp['world_size']}" not in srun or f"--ntasks-per-node={per_node}" not in srun:
            problems.append(f"{run.name}: srun {srun} starts other ranks than {hp['world_size']}")
        seen.add(run)
    assert seen == set(grid.runs(paper)), sorted(r.name for r in set(grid.runs(paper)) - seen)
    assert not problems, "\n".join(problems[:20])
    vit_l = next(r for r in grid.runs(paper) if r.name.startswith("ViT-L-14/80M/34B"))
    assert grid.hparams(paper, vit_l)["world_size"] == 400  # Table 18: 100 nodes x 4 GPUs


def test_missing_slurm_skips_locally_but_fails_in_ci(monkeypatch):
    monkeypatch.delenv("CI", raising=False)
    monkeypatch.delenv("CLIPSCALE_REQUIRE_SLURM", raising=False)
    with pytest.raises(pytest.skip.Exception, match="needs root"):
        _skip_or_fail("needs root")
    for var, value in (("CI", "true"), ("CLIPSCALE_REQUIRE_SLURM", "1")):
        monkeypatch.setenv(var, value)
        with pytest.raises(pytest.fail.Exception, match="required here.*needs root"):
            _skip_or_fail("needs root")
        monkeypatch.delenv(var)


def _job_gres(job_id: str) -> str:
    """The GPUs Slurm gave a job (scontrol show job -d: JOB_GRES=gpu:2), while squeue knows it."""
    res = subprocess.run(["scontrol", "show", "job", "-d", job_id], capture_output=True, text=True, timeout=30)
    m = re.search(r"\bJOB_GRES=(\S+)", res.stdout)
    return m.group(1) if m else ""


@pytest.mark.slurm
def test_the_papers_structure_runs_end_to_end_through_the_profile(slurm_cluster, tmp_path):
    """The cluster rehearsal: a reduced copy of config/paper.yaml (tests/data/cluster.yaml: GPUs per
    node through gres, 2 ranks per training run with accumulated batches, evaluation on a GPU with
    a data-loading worker, fine-tuning over 2 ranks; tiny models, gloo on the CPU) through
    `--profile profiles/slurm`: every job COMPLETED with the GPUs it asked for, the results
    table, the fine-tuning table and our fits."""
    import pandas as pd

    targets = ["results/results/results.parquet", "results/results/finetune.parquet",
               "results/fit/ours/coefficients.csv"]
    run = run_profile(tmp_path, targets, ROOT / "tests" / "data" / "cluster.yaml", snakefile=ROOT / "Snakefile",
                      timeout_s=1800)
    assert run.returncode == 0, _explain(run)
    rules = sorted(run.rule_of(j) for j in run.jobs)
    for rule, n in (("make_world", 1), ("subset", 1), ("train", 4), ("evaluate", 4), ("finetune", 1),
                    ("aggregate_results", 1), ("aggregate_finetune", 1), ("fit_input", 1)):
        assert rules.count(rule) == n, (rule, rules)
    gres = {j: _job_gres(j) for j in run.jobs}  # before jobcomp: squeue forgets after MinJobAge
    recs = slurm_cluster.wait_jobcomp(list(run.jobs))
    for jid in run.jobs:
        assert recs[jid]["JobState"] == "COMPLETED" and recs[jid]["ExitCode"] == "0:0", recs[jid]
    for jid in run.jobs_of("train") + run.jobs_of("finetune"):
        assert gres[jid].startswith("gpu:2"), (run.rule_of(jid), gres[jid])  # --gres=gpu:2, on the node
        assert "cpu=2" in recs[jid]["Tres"], recs[jid]  # 2 tasks x 1 CPU
    for jid in run.jobs_of("evaluate"):
        assert gres[jid].startswith("gpu:1"), gres[jid]
    for record in (tmp_path / "results" / "train").rglob("run.json"):
        rec = json.loads(record.read_text())
        assert (rec["world_size"], rec["accum_freq"], rec["global_batch_size"]) == (2, 2, 128), record
    train_log = next((tmp_path / "results" / "logs" / "train").rglob("*.log")).read_text()
    assert re.search(r"srun --ntasks=2 --nodes=1 --ntasks-per-node=2 .*--accel-bind=gn", train_log), train_log[-3000:]
    finetune_log = next((tmp_path / "results" / "logs" / "finetune").rglob("*.log")).read_text()
    assert "srun --ntasks=2" in finetune_log, finetune_log[-3000:]
    table = pd.read_parquet(tmp_path / "results" / "results" / "results.parquet")
    assert set(table.loc[table["source"] == "ours", "dataset"]) >= {"shapes", "world_captions"}
    finetuned = pd.read_parquet(tmp_path / "results" / "results" / "finetune.parquet")
    ft_log = tmp_path / "results" / "results" / "finetune_log.txt"
    assert len(finetuned) and finetuned["value"].notna().all(), (ft_log.read_text(), finetune_log[-3000:])
    fits = pd.read_csv(tmp_path / "results" / "fit" / "ours" / "coefficients.csv")
    assert (fits["task"] == "zeroshot_classification").any()


@pytest.mark.slurm
def test_expand_nodelist_agrees_with_scontrol(slurm_cluster):
    """The built-in node-list parser (used where scontrol is missing) agrees with Slurm's own."""
    for nodelist in ["node[01-03,07]", "a1,b[2-3],c", "r[1-2]-n[08-10]", "node[8-10]"]:
        out = subprocess.run(["scontrol", "show", "hostnames", nodelist], capture_output=True, text=True)
        assert out.returncode == 0, out.stderr
        assert launch.expand_nodelist(nodelist) == out.stdout.split(), nodelist


# ---------------------------------------------------------------------------------------------
# runs longer than a walltime (issue 18)
# ---------------------------------------------------------------------------------------------

WINDOW_RUN = "results/train/vit-xs/1k/{samples}/run.json"
# the windows tests' run: 2,344 steps of 64. On a fast day of this machine (2026-12-02) a window
# trains 640 steps beside the uninterrupted reference run and 1,200 alone, so the run still needs
# at least three 2-minute windows from the time limit alone (60k and 90k samples, enough on slower
# days, finished in the window after the requeue that day); on a day 2.5x slower, about 9 windows
# ~4,700 steps of batch 64: about 4 windows of 2 minutes on this machine with the data path of
# 2026-12-06 (a window trains ~65 s, ~1,150 steps); more on a slower day (timeout: ~9 windows)
WINDOW_SAMPLES = "300k"
FAILING_SAMPLES = "150k"  # a run expected to fit one window: Snakemake retries it once


def _window_config(tmp_path: Path, samples: str, **train) -> Path:
    """tests/data/slurm.yaml cut to one single-process training run, with a walltime of
    ``train.runtime`` minutes and the warning ``train.signal_lead_s`` before it."""
    cfg = yaml.safe_load((ROOT / "tests" / "data" / "slurm.yaml").read_text())
    cfg["grid"]["samples_seen"] = [samples]
    cfg["train"].update(nproc=1, workers=0, threads=1, checkpoints=2, **train)
    path = tmp_path / f"windows-{samples}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _losses(run_folder: Path) -> dict[int, str]:
    out = {}
    for line in (run_folder / "losses.csv").read_text().splitlines():
        step, loss = line.split(",")
        out[int(step)] = loss
    return out


def _watch_windows(run_folder: Path, requeue_attempt: int, stop: threading.Event, requeued: list) -> None:
    """While the run goes on: ``scontrol requeue`` its job some seconds into attempt
    ``requeue_attempt`` (1-based; as an admin, a preemption or a node failure would), and start a
    requeued job 5 s after it went back to the queue instead of after Slurm's requeue delay
    (BeginTime = requeue + 2 min; CI time, nothing the pipeline relies on). Not at once: a job
    restarted in the second it was requeued is killed by slurmctld ("Job credential revoked")."""
    pending_since: dict[str, float] = {}
    while not stop.wait(1.0):
        path = run_folder / "attempts.jsonl"
        lines = [json.loads(x) for x in path.read_text().splitlines()] if path.exists() else []
        starts = [x for x in lines if x["ended"] == "running"]
        for job in {x["slurm_job"] for x in starts if x.get("slurm_job")}:
            res = subprocess.run(["squeue", "--noheader", "--format=%T|%r", "--jobs", job],
                                 capture_output=True, text=True)
            if res.stdout.strip() != "PENDING|BeginTime":
                pending_since.pop(job, None)
            elif time.time() - pending_since.setdefault(job, time.time()) >= 5:
                subprocess.run(["scontrol", "update", f"JobId={job}", "StartTime=now"], capture_output=True)
                pending_since.pop(job, None)
        if not requeued and len(starts) >= requeue_attempt:
            started = starts[requeue_attempt - 1]
            if not any(x["id"] == started["id"] and x["ended"] != "running" for x in lines):
                time.sleep(15)  # some steps into the window
                res = subprocess.run(["scontrol", "requeue", started["slurm_job"]], capture_output=True, text=True)
                requeued.append((started["slurm_job"], res.returncode, res.stderr))


def _train_jobs_explained(workdir: Path, jobs: list[str], attempts: list[dict]) -> str:
    """Why a run took more than one Slurm job: its attempts and each job's log, last lines."""
    summary = [(a["slurm_job"], a["ended"], a["steps"]) for a in attempts]
    out = [f"train jobs {jobs}; attempts (job, ended, steps): {summary}"]
    for log in sorted((workdir / ".snakemake" / "slurm_logs").glob("rule_train/*/*.log")):
        lines = [x for x in log.read_text(errors="replace").splitlines() if "Train Epoch" not in x]
        out.append(f"--- {log.name}\n" + "\n".join(lines[-25:]))
    return "\n".join(out)


def _local_snakemake(workdir: Path, config: Path, *targets: str) -> subprocess.Popen:
    return subprocess.Popen([SNAKEMAKE, "-s", str(ROOT / "Snakefile"), "-d", str(workdir), "--configfile",
                             str(config), "--cores", "1", *targets],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


@pytest.fixture(scope="module")
def windows_workdir(request, tmp_path_factory) -> tuple[Path, Path]:
    """A workdir with the world, the subset and the model profile made (locally: what the Slurm
    tests of a training run do not need to wait for), and the config of its WINDOW_SAMPLES run."""
    with scratch(request, tmp_path_factory, "windows") as folder:
        config = _window_config(folder, WINDOW_SAMPLES, runtime=2, signal_lead_s=30)
        work = folder / "prepared"
        proc = _local_snakemake(work, config, "results/data/subsets/1k/manifest.json",
                                "results/models/vit-xs.profile.json")
        out, _ = proc.communicate(timeout=600)
        assert proc.returncode == 0, out[-4000:]
        yield work, config


@pytest.mark.slurm
def test_a_run_longer_than_its_walltime_finishes_over_several_windows(slurm_cluster, windows_workdir, tmp_path):
    """A run that needs several 2-minute walltime windows completes from one `snakemake --profile`:
    at each warning (sbatch --signal=USR1@30) the job saves its place and requeues itself; a
    `scontrol requeue` in the middle (preemption, an admin) is resumed the same way. The run ends
    with the step count, losses and weights of the same run made uninterrupted (at the same time,
    on this machine without Slurm: one CPU each), bit for bit."""
    import torch

    prepared, config = windows_workdir
    target = WINDOW_RUN.format(samples=WINDOW_SAMPLES)  # a window trains ~65 s
    ref, wd = tmp_path / "uninterrupted", tmp_path / "windows"
    shutil.copytree(prepared, ref, symlinks=True)
    shutil.copytree(prepared, wd, symlinks=True)
    reference_run = _local_snakemake(ref, config, target)
    run_folder = wd / Path(target).parent
    stop, requeued = threading.Event(), []
    watcher = threading.Thread(target=_watch_windows, args=(run_folder, 2, stop, requeued), daemon=True)
    watcher.start()
    try:
        run = run_profile(wd, [target], config, timeout_s=2700)  # up to ~9 windows on a slow day
    finally:
        stop.set()
        out, _ = reference_run.communicate(timeout=900)
    assert reference_run.returncode == 0, out[-4000:]
    reference = json.loads((ref / target).read_text())
    assert run.returncode == 0, _explain(run)
    record = json.loads((wd / target).read_text())
    attempts = record["attempts"]
    ends = [a["ended"] for a in attempts]
    print(f"[windows] through Slurm in {run.seconds:.0f} s: {len(attempts)} attempts: {ends}")
    assert requeued and requeued[0][1] == 0, requeued
    jobs = run.jobs_of("train")  # one Slurm job: requeued, never resubmitted by snakemake
    assert len(jobs) == 1, _train_jobs_explained(wd, jobs, attempts)
    train_job = jobs[0]
    assert {a["slurm_job"] for a in attempts} == {train_job}
    walltime = [a for a in attempts if a["ended"].startswith("signal SIGUSR1")]
    assert len(walltime) >= 2, ends  # at least three windows from the time limit alone
    assert any(a["ended"].startswith("signal SIGTERM") for a in attempts), ends  # the scontrol requeue
    assert ends[-1] == "completed" and attempts[0]["steps"] > 0, attempts
    # a window may end before its first step on a loaded machine (start-up took it); never two in a row
    assert all(a["steps"] > 0 or b["steps"] > 0 for a, b in zip(attempts, attempts[1:])), attempts
    for before, after in zip(attempts, attempts[1:]):  # each window resumes where the last stopped
        assert after["resumed_from_step"] in (None, before["stopped_at"]["global_step"]), (before, after)
    assert record["steps_total"] == reference["steps_total"]
    assert _losses(run_folder) == _losses(ref / Path(target).parent)
    final = record["final_checkpoint"]
    a = torch.load(wd / final, map_location="cpu", weights_only=True)["state_dict"]
    b = torch.load(ref / final, map_location="cpu", weights_only=True)["state_dict"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    recs = slurm_cluster.wait_jobcomp([train_job])
    assert recs[train_job]["JobState"] == "COMPLETED", recs[train_job]


@pytest.mark.slurm
def test_a_run_that_fails_at_start_stops_after_one_retry(slurm_cluster, windows_workdir, tmp_path):
    """A run that crashes without progress is tried twice (the profile's retries: 1, for a grid
    whose runs are expected to fit one walltime window), not requeued, and the error names the
    run, its log and the reason."""
    import copy

    from clipscale import checks, resources

    prepared, config = windows_workdir
    cfg = yaml.safe_load(config.read_text())
    cfg["train"]["extra_args"] = ["--no-such-open-clip-flag"]
    cfg["grid"]["samples_seen"] = [FAILING_SAMPLES]
    # more expected windows would give more retries (a third attempt then refuses to start)
    assert resources.train_retries(checks.validate(copy.deepcopy(cfg))) == 1
    failing_config = tmp_path / "failing.yaml"
    failing_config.write_text(yaml.safe_dump(cfg))
    wd = tmp_path / "failing"
    shutil.copytree(prepared, wd, symlinks=True)
    target = WINDOW_RUN.format(samples=FAILING_SAMPLES)
    run = run_profile(wd, [target], failing_config, timeout_s=900)
    assert run.returncode != 0 and not run.timed_out, _explain(run)
    jobs = run.jobs_of("train")
    assert len(jobs) == 2 and len(run.jobs) == 2, _explain(run)  # the first attempt and one retry, nothing else
    recs = slurm_cluster.wait_jobcomp(jobs)
    assert all(recs[j]["JobState"] == "FAILED" for j in jobs), [recs[j] for j in jobs]
    text = (wd / "results" / "logs" / "train" / "vit-xs" / "1k" / f"{FAILING_SAMPLES}.log").read_text()
    assert f"run vit-xs/1k/{FAILING_SAMPLES}" in text and "no-such-open-clip-flag" in text, text[-3000:]
    assert "requeue" not in text.lower(), text[-3000:]


@pytest.mark.slurm
def test_a_second_job_for_a_run_refuses_while_the_first_owns_it(slurm_cluster, windows_workdir, tmp_path):
    """Snakemake dies (kill -9) while its training job runs on; a restarted Snakemake submits the
    same run again: that job refuses to start, naming the owner (the first job, RUNNING), and the
    run folder's files stay the first job's alone."""
    prepared, _ = windows_workdir
    config = _window_config(tmp_path, WINDOW_SAMPLES, runtime=20, signal_lead_s=30)
    wd = tmp_path / "owned"
    shutil.copytree(prepared, wd, symlinks=True)
    target = WINDOW_RUN.format(samples=WINDOW_SAMPLES)
    run_folder = wd / Path(target).parent
    first = subprocess.Popen(profile_command(wd, [target], config), cwd=wd, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True, start_new_session=True)
    owner_job = None
    try:
        deadline = time.time() + 600
        while time.time() < deadline and first.poll() is None:
            attempts = run_folder / "attempts.jsonl"
            lines = [json.loads(x) for x in attempts.read_text().splitlines()] if attempts.exists() else []
            running = [x for x in lines if x["ended"] == "running" and x.get("slurm_job")]
            if running and (run_folder / "owner.json").exists():
                owner_job = running[0]["slurm_job"]
                break
            time.sleep(1)
        assert owner_job, (first.poll(), first.stdout.read() if first.poll() is not None else "")
        first.kill()  # snakemake dies; its Slurm job goes on
        first.wait(timeout=60)
        assert subprocess.run(["squeue", "-h", "-j", owner_job, "-o", "%T"], capture_output=True,
                              text=True).stdout.strip() == "RUNNING"
        unlock = subprocess.run(profile_command(wd, [target], config, ["--unlock"]), cwd=wd, capture_output=True,
                                text=True, timeout=300)
        assert unlock.returncode == 0, unlock.stdout + unlock.stderr
        second = run_profile(wd, [target], config, timeout_s=600)
        assert second.returncode != 0 and not second.timed_out, _explain(second)
        refused = second.jobs_of("train")
        assert refused and owner_job not in refused, _explain(second)
        log = (wd / "results" / "logs" / "train" / "vit-xs" / "1k" / f"{WINDOW_SAMPLES}.log").read_text()
        assert f"owned by another job (Slurm job {owner_job} is RUNNING" in log, log[-3000:]
        state = subprocess.run(["squeue", "-h", "-j", owner_job, "-o", "%T"], capture_output=True, text=True)
        assert state.stdout.strip() == "RUNNING"  # the owner was not disturbed
        owner = json.loads((run_folder / "owner.json").read_text())
        assert owner["slurm_job_id"] == owner_job
        lines = [json.loads(x) for x in (run_folder / "attempts.jsonl").read_text().splitlines()]
        assert {x.get("slurm_job") for x in lines} == {owner_job}, lines
    finally:
        if first.poll() is None:
            first.kill()
        if owner_job:
            subprocess.run(["scancel", owner_job], capture_output=True)
