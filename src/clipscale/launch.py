"""Distributed launch for training: one machine (torchrun) or a Slurm allocation (srun).

Two halves:

* the **launcher side** builds the command that starts N training processes:
  ``build_command(["-m", "open_clip_train.main"], args, nproc=2, nodes=1)`` gives
  ``python -m torch.distributed.run --standalone --nnodes=1 --nproc-per-node=2 -m
  open_clip_train.main -- ARGS`` on one machine, ``srun --ntasks=2 --nodes=1 ... python -m
  open_clip_train.main ARGS`` inside a Slurm job, and plain ``python -m ... ARGS`` for one
  process;
* the **process side** (``dist_env()``, ``apply_env()``) works out, inside each started
  process, its rank / world size / local rank and the rendezvous address (MASTER_ADDR,
  MASTER_PORT) from what torchrun (RANK, WORLD_SIZE, LOCAL_RANK, ...) or srun (SLURM_PROCID,
  SLURM_NTASKS, SLURM_LOCALID, SLURM_STEP_NODELIST, ...) put in the environment, and exports the
  torch.distributed variables (``init_method="env://"``).

Under Slurm every task must agree on MASTER_ADDR/MASTER_PORT without talking to each other:
MASTER_ADDR is the first host of the step's node list (expanded with ``scontrol show
hostnames`` when available, else by ``expand_nodelist``), MASTER_PORT is derived from the job
and step id (``port_for_job``). Outside Slurm a free port is picked.

With the snakemake slurm executor a rule that starts several tasks needs ``resources: tasks=N,
mpi="srun"``: the plugin then runs the rule's command in the batch step (not inside ``srun -n1``)
so that the srun built here can start N tasks; a plain srun inside a non-MPI job waits forever
for CPUs the job step already holds (``overlap=True`` adds ``--overlap`` against that).

``python -m clipscale.launch env`` prints this process's ``DistEnv`` as JSON;
``python -m clipscale.launch check`` joins a gloo process group and all-reduces the ranks (a
smoke test of a launch); ``python -m clipscale.launch command --nproc 2 -- -m pkg.mod ARGS``
prints the command ``build_command`` would run.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
from dataclasses import asdict, dataclass
from typing import Mapping, MutableMapping, Sequence

# Deterministic per-job ports come from [PORT_LOW, PORT_LOW + PORT_SPAN), below Linux's default
# ephemeral range (32768-60999) so that a port handed out to some outgoing connection is unlikely.
PORT_LOW = 15000
PORT_SPAN = 15000


@dataclass(frozen=True)
class DistEnv:
    """Where this process sits in a distributed run."""

    rank: int
    world_size: int
    local_rank: int
    local_world_size: int
    master_addr: str
    master_port: int
    launcher: str  # "torchrun", "slurm" or "single"

    @property
    def is_distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def torch_env(self) -> dict[str, str]:
        """The variables torch.distributed's ``env://`` rendezvous and torchrun-aware code read."""
        return {
            "RANK": str(self.rank),
            "WORLD_SIZE": str(self.world_size),
            "LOCAL_RANK": str(self.local_rank),
            "LOCAL_WORLD_SIZE": str(self.local_world_size),
            "MASTER_ADDR": self.master_addr,
            "MASTER_PORT": str(self.master_port),
        }


# ---------------------------------------------------------------------------------------------
# Slurm's compact host list and task count formats
# ---------------------------------------------------------------------------------------------


def _split_top_level(text: str, what: str) -> list[str]:
    """Split on commas that are not inside [...]; reject unbalanced brackets."""
    parts, depth, current = [], 0, []
    for ch in text:
        if ch == "[":
            depth += 1
            if depth > 1:
                raise ValueError(f"nested '[' in Slurm {what} {text!r}")
        elif ch == "]":
            depth -= 1
            if depth < 0:
                raise ValueError(f"unbalanced ']' in Slurm {what} {text!r}")
        if ch == "," and depth == 0:
            parts.append("".join(current))
            current = []
        else:
            current.append(ch)
    if depth != 0:
        raise ValueError(f"unbalanced '[' in Slurm {what} {text!r}")
    parts.append("".join(current))
    return parts


def _expand_ranges(body: str, nodelist: str) -> list[str]:
    """'01-03,07' -> ['01', '02', '03', '07'] (zero padding follows the lower bound's width)."""
    out = []
    for item in body.split(","):
        item = item.strip()
        m = re.fullmatch(r"(\d+)(?:-(\d+))?", item)
        if not m:
            raise ValueError(f"bad range {item!r} in Slurm node list {nodelist!r}")
        lo_s, hi_s = m.group(1), m.group(2)
        if hi_s is None:
            out.append(lo_s)
            continue
        lo, hi = int(lo_s), int(hi_s)
        if hi < lo:
            raise ValueError(f"descending range {item!r} in Slurm node list {nodelist!r}")
        width = len(lo_s) if lo_s.startswith("0") else 0
        out.extend(str(i).zfill(width) for i in range(lo, hi + 1))
    return out


def expand_nodelist(nodelist: str) -> list[str]:
    """Expand Slurm's compact host list in pure Python, in Slurm's order.

    ``node[01-03,07]`` -> node01 node02 node03 node07; ``a1,b[2-3]`` -> a1 b2 b3;
    ``r[1-2]-n[1-2]`` -> r1-n1 r1-n2 r2-n1 r2-n2. Raises ValueError on malformed input.
    """
    text = nodelist.strip()
    if not text:
        raise ValueError("empty Slurm node list")
    hosts: list[str] = []
    for item in _split_top_level(text, "node list"):
        item = item.strip()
        if not item:
            raise ValueError(f"empty host name in Slurm node list {nodelist!r}")
        # pieces alternate: literal, bracket body, literal, bracket body, ..., literal
        pieces = re.split(r"\[([^\]]*)\]", item)
        choices: list[list[str]] = []
        for i, piece in enumerate(pieces):
            if i % 2 == 0:
                if "[" in piece or "]" in piece:
                    raise ValueError(f"unbalanced bracket in Slurm node list {nodelist!r}")
                choices.append([piece])
            else:
                choices.append(_expand_ranges(piece, nodelist))
        hosts.extend("".join(combo) for combo in itertools.product(*choices))
    return hosts


def expand_tasks_per_node(spec: str) -> list[int]:
    """Slurm's SLURM_TASKS_PER_NODE / SLURM_STEP_TASKS_PER_NODE: '2(x3),1' -> [2, 2, 2, 1]."""
    out: list[int] = []
    for item in spec.strip().split(","):
        m = re.fullmatch(r"\s*(\d+)(?:\(x(\d+)\))?\s*", item)
        if not m:
            raise ValueError(f"bad Slurm tasks-per-node spec {spec!r}")
        out.extend([int(m.group(1))] * int(m.group(2) or 1))
    return out


def hostnames(nodelist: str, use_scontrol: bool = True) -> list[str]:
    """Hosts of a node list: ``scontrol show hostnames`` when it runs, else ``expand_nodelist``."""
    if use_scontrol and shutil.which("scontrol"):
        try:
            res = subprocess.run(
                ["scontrol", "show", "hostnames", nodelist],
                capture_output=True,
                text=True,
                timeout=20,
            )
            hosts = res.stdout.split()
            if res.returncode == 0 and hosts:
                return hosts
        except (OSError, subprocess.SubprocessError):
            pass
    return expand_nodelist(nodelist)


# ---------------------------------------------------------------------------------------------
# ports
# ---------------------------------------------------------------------------------------------


def port_for_job(job_id: str | int, step_id: str | int | None = None) -> int:
    """A port every task of a Slurm job step computes alike: PORT_LOW + f(job, step) % PORT_SPAN.

    Array tasks have their own SLURM_JOB_ID; the step id separates concurrent steps of one job.
    """
    try:
        job = int(str(job_id).strip())
    except ValueError:
        raise ValueError(f"SLURM_JOB_ID must be an integer, got {job_id!r}") from None
    step = 0
    if step_id is not None and str(step_id).strip().isdigit():
        step = int(str(step_id).strip())
    return PORT_LOW + (job * 7919 + step) % PORT_SPAN


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nothing listens on right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


# ---------------------------------------------------------------------------------------------
# process side
# ---------------------------------------------------------------------------------------------


def _int(environ: Mapping[str, str], name: str) -> int:
    value = environ[name]
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"environment variable {name} must be an integer, got {value!r}") from None


def in_slurm_step(environ: Mapping[str, str] | None = None) -> bool:
    """True in a task started by srun (not in a batch script: there SLURM_NTASKS counts the
    allocation's tasks although only one process runs, and trusting it would hang rank 0)."""
    env = os.environ if environ is None else environ
    return "SLURM_PROCID" in env and "SLURM_STEP_ID" in env and "SLURM_JOB_ID" in env


def dist_env(environ: Mapping[str, str] | None = None, use_scontrol: bool = True) -> DistEnv:
    """Rank, world size, local rank and rendezvous address of this process.

    Precedence: torchrun's variables (RANK, WORLD_SIZE, LOCAL_RANK present), then an srun task
    (SLURM_PROCID, SLURM_NTASKS, SLURM_LOCALID, with SLURM_STEP_ID), else a single process.
    MASTER_ADDR / MASTER_PORT already in the environment win over derived values.
    """
    env = os.environ if environ is None else environ
    if all(k in env for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK")):
        world = _int(env, "WORLD_SIZE")
        return _checked(
            DistEnv(
                rank=_int(env, "RANK"),
                world_size=world,
                local_rank=_int(env, "LOCAL_RANK"),
                local_world_size=_int(env, "LOCAL_WORLD_SIZE") if "LOCAL_WORLD_SIZE" in env else world,
                master_addr=env.get("MASTER_ADDR", "127.0.0.1"),
                master_port=_int(env, "MASTER_PORT") if "MASTER_PORT" in env else free_port(),
                launcher="torchrun",
            )
        )
    if in_slurm_step(env):
        rank = _int(env, "SLURM_PROCID")
        world = _int(env, "SLURM_STEP_NUM_TASKS") if "SLURM_STEP_NUM_TASKS" in env else _int(env, "SLURM_NTASKS")
        local_rank = _int(env, "SLURM_LOCALID") if "SLURM_LOCALID" in env else 0
        local_world = world
        tpn = env.get("SLURM_STEP_TASKS_PER_NODE") or env.get("SLURM_TASKS_PER_NODE")
        if tpn:
            counts = expand_tasks_per_node(tpn)
            node = _int(env, "SLURM_NODEID") if "SLURM_NODEID" in env else 0
            if node < len(counts):
                local_world = counts[node]
        if "MASTER_ADDR" in env:
            addr = env["MASTER_ADDR"]
        else:
            nodelist = (
                env.get("SLURM_STEP_NODELIST") or env.get("SLURM_JOB_NODELIST") or env.get("SLURM_NODELIST")
            )
            if not nodelist:
                raise ValueError("srun task without SLURM_STEP_NODELIST / SLURM_JOB_NODELIST: cannot find MASTER_ADDR")
            addr = hostnames(nodelist, use_scontrol=use_scontrol)[0]
        port = (
            _int(env, "MASTER_PORT")
            if "MASTER_PORT" in env
            else port_for_job(env["SLURM_JOB_ID"], env.get("SLURM_STEP_ID"))
        )
        return _checked(DistEnv(rank, world, local_rank, local_world, addr, port, "slurm"))
    return DistEnv(
        rank=0,
        world_size=1,
        local_rank=0,
        local_world_size=1,
        master_addr=env.get("MASTER_ADDR", "127.0.0.1"),
        master_port=_int(env, "MASTER_PORT") if "MASTER_PORT" in env else free_port(),
        launcher="single",
    )


def _checked(d: DistEnv) -> DistEnv:
    if d.world_size < 1:
        raise ValueError(f"world size must be >= 1, got {d.world_size} ({d.launcher})")
    if not 0 <= d.rank < d.world_size:
        raise ValueError(f"rank {d.rank} outside 0..{d.world_size - 1} ({d.launcher})")
    if not 0 <= d.local_rank < max(d.local_world_size, 1):
        raise ValueError(f"local rank {d.local_rank} outside 0..{d.local_world_size - 1} ({d.launcher})")
    if not 0 < d.master_port < 65536:
        raise ValueError(f"MASTER_PORT {d.master_port} is not a TCP port ({d.launcher})")
    return d


def apply_env(d: DistEnv | None = None, environ: MutableMapping[str, str] | None = None) -> DistEnv:
    """Export RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE, MASTER_ADDR, MASTER_PORT (for
    ``torch.distributed.init_process_group(init_method="env://")`` and torchrun-aware code such
    as open_clip_train, which reads them) and return the DistEnv."""
    target = os.environ if environ is None else environ
    d = dist_env(target) if d is None else d
    target.update(d.torch_env())
    return d


# ---------------------------------------------------------------------------------------------
# launcher side
# ---------------------------------------------------------------------------------------------


def in_slurm_job(environ: Mapping[str, str] | None = None) -> bool:
    """Inside a Slurm allocation (batch script or step) with srun available."""
    env = os.environ if environ is None else environ
    return bool(env.get("SLURM_JOB_ID")) and shutil.which("srun") is not None


def launch_command(
    nproc: int,
    nodes: int = 1,
    under_slurm: bool | None = None,
    *,
    cpus_per_task: int | None = None,
    overlap: bool = True,
    gpus: bool = False,
    python: str | None = None,
) -> list[str]:
    """Command prefix that starts ``nproc`` processes per node on ``nodes`` nodes.

    What follows the prefix is what you would pass to ``python`` (``["-m", "pkg.mod", *args]`` or
    ``["script.py", *args]``); use ``build_command`` to get torchrun's ``--`` right.

    * Slurm (``under_slurm`` true; None = detect): ``srun --ntasks=nproc*nodes --nodes=nodes
      --ntasks-per-node=nproc --kill-on-bad-exit=1 [--overlap] [--cpus-per-task=C] [--cpu-bind=v
      --accel-bind=gn] python``; with ``gpus``, open_clip's documented binding: each task on the
      CPUs and the GPU closest to each other (``--accel-bind=gn``), the binding printed
      (``--cpu-bind=v``).
      ``--kill-on-bad-exit`` stops the other ranks when one dies instead of leaving them
      blocked in a collective. srun in a 22.05+ job step does not inherit the job's
      --cpus-per-task: pass it here.
    * one machine, nproc > 1: ``python -m torch.distributed.run --standalone --nnodes=1
      --nproc-per-node=nproc`` (torchrun, run through this interpreter so it needs no PATH).
    * one machine, one process: ``python``.
    """
    if nproc < 1 or nodes < 1:
        raise ValueError(f"nproc and nodes must be >= 1, got nproc={nproc}, nodes={nodes}")
    python = python or sys.executable
    slurm = in_slurm_job() if under_slurm is None else under_slurm
    if slurm:
        cmd = [
            "srun",
            f"--ntasks={nproc * nodes}",
            f"--nodes={nodes}",
            f"--ntasks-per-node={nproc}",
            "--kill-on-bad-exit=1",
        ]
        if overlap:
            cmd.append("--overlap")
        if cpus_per_task:
            cmd.append(f"--cpus-per-task={cpus_per_task}")
        if gpus:
            cmd += ["--cpu-bind=v", "--accel-bind=gn"]
        return cmd + [python]
    if nodes != 1:
        raise ValueError(
            f"{nodes} nodes requested outside Slurm: multi-node runs need a Slurm allocation "
            "(or set up torchrun's rendezvous by hand)"
        )
    if nproc == 1:
        return [python]
    return [python, "-m", "torch.distributed.run", "--standalone", "--nnodes=1", f"--nproc-per-node={nproc}"]


# allocation-level settings that sbatch exports and an srun inside the job would inherit as its
# own: SLURM_NTASKS_PER_GPU (from --ntasks-per-gpu) makes `srun --ntasks-per-node` fail ("srun:
# fatal: --ntasks-per-node is mutually exclusive with --ntasks-per-gpu"); the others would
# override the step's explicit shape. The job step plugin 0.6.1 drops every SLURM_* but the job's
# identity; 0.6.0 drops none: the launcher does not rely on it.
STEP_CONFLICTS = ("SLURM_NTASKS_PER_GPU", "SLURM_NTASKS_PER_NODE", "SLURM_NTASKS_PER_SOCKET",
                  "SLURM_NTASKS_PER_CORE", "SLURM_TRES_PER_TASK", "SLURM_CPUS_PER_GPU",
                  "SLURM_GPUS_PER_TASK", "SLURM_MEM_PER_GPU", "SLURM_GPUS", "SLURM_GPUS_PER_NODE",
                  "SLURM_NTASKS", "SLURM_NPROCS", "SLURM_DISTRIBUTION", "SLURM_CPU_BIND",
                  "SRUN_CPUS_PER_TASK")


def step_environment(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment for the launch command: as this process's, without the allocation-level
    task and GPU settings (STEP_CONFLICTS) an srun would take for its own."""
    env = dict(os.environ if environ is None else environ)
    for name in STEP_CONFLICTS:
        env.pop(name, None)
    return env


def is_torchrun(prefix: Sequence[str]) -> bool:
    return "torch.distributed.run" in prefix or any(os.path.basename(p) == "torchrun" for p in prefix)


def build_command(
    target: Sequence[str],
    args: Sequence[str] = (),
    nproc: int = 1,
    nodes: int = 1,
    under_slurm: bool | None = None,
    **kwargs,
) -> list[str]:
    """Full command: launcher prefix + target (``["-m", "mod"]`` or ``["script.py"]``) + args.

    torchrun parses options after the script with abbreviations on (``--logs`` would be taken for
    its own ``--logs-specs``), so for torchrun a ``--`` goes between target and args; python and
    srun get the args as they are.
    """
    prefix = launch_command(nproc, nodes, under_slurm, **kwargs)
    sep = ["--"] if is_torchrun(prefix) and args else []
    return [*prefix, *target, *sep, *args]


# ---------------------------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------------------------


def _check(timeout_s: float) -> dict:
    """Join a gloo group via env:// and all-reduce the ranks: proves the launch agrees."""
    from datetime import timedelta

    import torch
    import torch.distributed as dist

    d = apply_env()
    dist.init_process_group("gloo", init_method="env://", timeout=timedelta(seconds=timeout_s))
    try:
        t = torch.tensor([float(d.rank)])
        dist.all_reduce(t)
        total = int(t.item())
    finally:
        dist.destroy_process_group()
    expected = d.world_size * (d.world_size - 1) // 2
    if total != expected:
        raise RuntimeError(f"all_reduce of ranks gave {total}, expected {expected}")
    return {**asdict(d), "host": socket.gethostname(), "rank_sum": total}


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m clipscale.launch", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    sub.add_parser("env", help="print this process's DistEnv as JSON")
    c = sub.add_parser("check", help="gloo all_reduce of the ranks across the launched processes")
    c.add_argument("--timeout", type=float, default=120.0, help="seconds to wait for the group")
    c.add_argument("--out", help="write the JSON result to this file ({rank} is replaced)")
    b = sub.add_parser("command", help="print the launch command for the given python args")
    b.add_argument("--nproc", type=int, default=1)
    b.add_argument("--nodes", type=int, default=1)
    b.add_argument("--slurm", choices=["auto", "yes", "no"], default="auto")
    b.add_argument("--cpus-per-task", type=int)
    b.add_argument("python_args", nargs=argparse.REMAINDER, help="-- -m pkg.mod ARGS or -- script.py ARGS")
    a = p.parse_args(argv)
    if a.cmd == "env":
        print(json.dumps(asdict(dist_env())))
    elif a.cmd == "check":
        res = _check(a.timeout)
        text = json.dumps(res)
        if a.out:
            with open(a.out.replace("{rank}", str(res["rank"])), "w") as fh:
                fh.write(text + "\n")
        print(text)
    else:
        rest = list(a.python_args)
        if rest and rest[0] == "--":
            rest = rest[1:]
        if not rest:
            p.error("command: give the python args after --, e.g. -- -m pkg.mod --flag")
        n = 2 if rest[0] == "-m" else 1
        slurm = {"auto": None, "yes": True, "no": False}[a.slurm]
        cmd = build_command(rest[:n], rest[n:], a.nproc, a.nodes, slurm, cpus_per_task=a.cpus_per_task)
        print(shlex.join(cmd))
    return 0


if __name__ == "__main__":
    sys.exit(main())
