"""clipscale.launch: node lists, ranks from torchrun/srun variables, ports, launch commands.

The real srun path (two ranks all-reducing inside a Slurm job) is in tests/test_slurm.py.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys

import pytest

from clipscale import launch
from clipscale.launch import (
    DistEnv,
    apply_env,
    build_command,
    dist_env,
    expand_nodelist,
    expand_tasks_per_node,
    launch_command,
    port_for_job,
)

PY = sys.executable


@pytest.mark.parametrize(
    "nodelist, hosts",
    [
        ("node01", ["node01"]),
        ("node[01-03,07]", ["node01", "node02", "node03", "node07"]),
        ("node[8-10]", ["node8", "node9", "node10"]),
        ("node[08-10]", ["node08", "node09", "node10"]),
        ("a1,b[2-3],c", ["a1", "b2", "b3", "c"]),
        ("gpu-[1-2]-ib", ["gpu-1-ib", "gpu-2-ib"]),
        ("r[1-2]-n[1-2]", ["r1-n1", "r1-n2", "r2-n1", "r2-n2"]),
        ("x[001-002],y[5]", ["x001", "x002", "y5"]),
        ("host.example.org", ["host.example.org"]),
    ],
)
def test_expand_nodelist(nodelist, hosts):
    assert expand_nodelist(nodelist) == hosts


@pytest.mark.parametrize("bad", ["", "node[01-03", "node01-03]", "node[a-b]", "node[5-3]", "n[[1]]", "a,,b", "n[]"])
def test_expand_nodelist_rejects_malformed(bad):
    with pytest.raises(ValueError, match="Slurm node list|empty"):
        expand_nodelist(bad)


def test_hostnames_falls_back_to_parser():
    assert launch.hostnames("n[1-2]", use_scontrol=False) == ["n1", "n2"]


def test_expand_tasks_per_node():
    assert expand_tasks_per_node("4") == [4]
    assert expand_tasks_per_node("2(x3),1") == [2, 2, 2, 1]
    with pytest.raises(ValueError, match="tasks-per-node"):
        expand_tasks_per_node("2(3)")


def test_port_for_job_is_deterministic_and_in_range():
    ports = {port_for_job(j) for j in range(1, 5000)}
    assert all(launch.PORT_LOW <= p < launch.PORT_LOW + launch.PORT_SPAN for p in ports)
    assert len(ports) > 4000  # consecutive jobs rarely share a port
    assert port_for_job("1234") == port_for_job(1234) == port_for_job(1234, None)
    assert port_for_job(1234, 0) != port_for_job(1234, 1)
    with pytest.raises(ValueError, match="SLURM_JOB_ID"):
        port_for_job("12x")


def _srun_env(**kw):
    env = {
        "SLURM_JOB_ID": "4242",
        "SLURM_STEP_ID": "0",
        "SLURM_PROCID": "5",
        "SLURM_NTASKS": "8",
        "SLURM_STEP_NUM_TASKS": "8",
        "SLURM_LOCALID": "1",
        "SLURM_NODEID": "1",
        "SLURM_STEP_TASKS_PER_NODE": "4(x2)",
        "SLURM_STEP_NODELIST": "gpu[07-08]",
        "SLURM_JOB_NODELIST": "gpu[07-08,11]",
    }
    env.update(kw)
    return env


def test_dist_env_from_srun():
    d = dist_env(_srun_env(), use_scontrol=False)
    assert d == DistEnv(5, 8, 1, 4, "gpu07", port_for_job(4242, 0), "slurm")
    # every task computes the same rendezvous
    other = dist_env(_srun_env(SLURM_PROCID="0", SLURM_LOCALID="0", SLURM_NODEID="0"), use_scontrol=False)
    assert (other.master_addr, other.master_port) == (d.master_addr, d.master_port)
    assert other.rank == 0 and other.is_main


def test_dist_env_srun_job_nodelist_and_overrides():
    env = _srun_env()
    del env["SLURM_STEP_NODELIST"]
    assert dist_env(env, use_scontrol=False).master_addr == "gpu07"
    env.update(MASTER_ADDR="10.0.0.1", MASTER_PORT="23456")
    d = dist_env(env, use_scontrol=False)
    assert (d.master_addr, d.master_port) == ("10.0.0.1", 23456)


def test_dist_env_batch_script_is_not_a_rank():
    """A batch script of a 4-task job has SLURM_PROCID=0, SLURM_NTASKS=4 but no step: 1 process."""
    env = {"SLURM_JOB_ID": "7", "SLURM_PROCID": "0", "SLURM_NTASKS": "4", "SLURM_JOB_NODELIST": "n1"}
    d = dist_env(env)
    assert d.launcher == "single" and d.world_size == 1 and d.rank == 0


def test_dist_env_from_torchrun_wins():
    env = _srun_env(RANK="3", WORLD_SIZE="4", LOCAL_RANK="3", LOCAL_WORLD_SIZE="4",
                    MASTER_ADDR="127.0.0.1", MASTER_PORT="29500")
    assert dist_env(env) == DistEnv(3, 4, 3, 4, "127.0.0.1", 29500, "torchrun")


def test_dist_env_single_process_gets_free_port():
    d = dist_env({})
    assert (d.rank, d.world_size, d.launcher, d.master_addr) == (0, 1, "single", "127.0.0.1")
    with socket.socket() as s:  # the port was free when chosen
        s.bind(("127.0.0.1", d.master_port))


@pytest.mark.parametrize(
    "env, match",
    [
        (_srun_env(SLURM_PROCID="8"), "rank 8 outside"),
        (_srun_env(SLURM_PROCID="x"), "SLURM_PROCID must be an integer"),
        ({"RANK": "0", "WORLD_SIZE": "0", "LOCAL_RANK": "0", "MASTER_PORT": "1"}, "world size"),
        (_srun_env(MASTER_PORT="70000"), "not a TCP port"),
    ],
)
def test_dist_env_rejects_inconsistent(env, match):
    with pytest.raises(ValueError, match=match):
        dist_env(env, use_scontrol=False)


def test_dist_env_srun_without_nodelist():
    env = _srun_env()
    del env["SLURM_STEP_NODELIST"], env["SLURM_JOB_NODELIST"]
    with pytest.raises(ValueError, match="MASTER_ADDR"):
        dist_env(env, use_scontrol=False)


def test_apply_env_exports_torch_variables():
    target = _srun_env()
    d = apply_env(environ=target)
    assert target["RANK"] == "5" and target["WORLD_SIZE"] == "8" and target["LOCAL_RANK"] == "1"
    assert target["MASTER_PORT"] == str(d.master_port) and target["LOCAL_WORLD_SIZE"] == "4"
    # once exported, torchrun's variables describe the same process
    assert dist_env(target) == DistEnv(**{**d.__dict__, "launcher": "torchrun"})


def test_launch_command_shapes():
    assert launch_command(1, 1, under_slurm=False) == [PY]
    assert launch_command(2, 1, under_slurm=False) == [
        PY, "-m", "torch.distributed.run", "--standalone", "--nnodes=1", "--nproc-per-node=2"]
    assert launch_command(4, 2, under_slurm=True, cpus_per_task=8) == [
        "srun", "--ntasks=8", "--nodes=2", "--ntasks-per-node=4", "--kill-on-bad-exit=1", "--overlap",
        "--cpus-per-task=8", PY]
    assert "--overlap" not in launch_command(2, 1, under_slurm=True, overlap=False)
    with pytest.raises(ValueError, match="outside Slurm"):
        launch_command(2, 2, under_slurm=False)
    with pytest.raises(ValueError, match=">= 1"):
        launch_command(0, 1, under_slurm=False)


def test_launch_command_detects_slurm(monkeypatch):
    monkeypatch.setattr(launch.shutil, "which", lambda name: "/usr/bin/srun" if name == "srun" else None)
    monkeypatch.setenv("SLURM_JOB_ID", "99")
    assert launch_command(2)[0] == "srun"
    monkeypatch.delenv("SLURM_JOB_ID")
    assert launch_command(2)[0] == PY


def test_build_command_separates_torchrun_args():
    """torchrun abbreviates options after the script (--logs -> its --logs-specs): args follow --."""
    target, args = ["-m", "open_clip_train.main"], ["--logs", "x"]
    assert build_command(target, args, nproc=2, under_slurm=False)[-5:] == [
        "-m", "open_clip_train.main", "--", "--logs", "x"]
    assert build_command(target, args, nproc=1, under_slurm=False) == [PY, *target, *args]
    assert build_command(target, args, nproc=2, under_slurm=True)[-5:] == [PY, *target, *args]


def test_torchrun_two_processes_agree(tmp_path):
    """The local path for real: torchrun starts 2 processes that find each other and all-reduce."""
    cmd = build_command(["-m", "clipscale.launch"], ["check", "--timeout", "60", "--out", str(tmp_path / "r{rank}.json")],
                        nproc=2, under_slurm=False)
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=300,
                         env={**_clean_env(), "OMP_NUM_THREADS": "1"})
    assert res.returncode == 0, res.stdout + res.stderr
    ranks = [json.loads((tmp_path / f"r{i}.json").read_text()) for i in range(2)]
    assert [r["rank"] for r in ranks] == [0, 1]
    assert {r["launcher"] for r in ranks} == {"torchrun"} and {r["rank_sum"] for r in ranks} == {1}


def _clean_env():
    import os

    return {k: v for k, v in os.environ.items()
            if not k.startswith(("SLURM_", "RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_"))}


def test_cli_command_and_env():
    out = subprocess.run([PY, "-m", "clipscale.launch", "command", "--nproc", "2", "--slurm", "yes", "--",
                          "-m", "pkg.mod", "--flag"], capture_output=True, text=True, env=_clean_env())
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["srun", "--ntasks=2", "--nodes=1", "--ntasks-per-node=2",
                                  "--kill-on-bad-exit=1", "--overlap", PY, "-m", "pkg.mod", "--flag"]
    out = subprocess.run([PY, "-m", "clipscale.launch", "env"], capture_output=True, text=True, env=_clean_env())
    assert out.returncode == 0 and json.loads(out.stdout)["launcher"] == "single"
