"""How long snakemake takes to build the paper grid's DAG with the Slurm profile (a dry run).

    .venv/bin/python benchmarks/bench_dag.py                     # config/paper.yaml, 3 repeats
    .venv/bin/python benchmarks/bench_dag.py --configfile config/config.yaml --repeats 1

Runs ``snakemake -n --forceall --profile profiles/slurm --configfile CONFIG`` in the repository
(--forceall: every job of the DAG counts, whatever already exists under results/), and prints the
seconds of each repeat, their median and the number of jobs (snakemake's "Job stats" total) with
the count per rule. Nothing is submitted: a dry run needs no Slurm. Exit status 1 if snakemake
fails (its output's tail is printed).

The DAG lists the pool's shards (pool.source/*.tar: one directory read, then one stat per shard
for the params that follow a user's pool; no shard is an input file) and the config check looks
at the downstream sets' folders. Where the configured pool is not there, empty stand-ins (clipscale.standin) are
made in a temporary folder: --stand-in-shards empty .tar files (default 232000: LAION-2B-en's
~2.32B pairs at img2dataset's 10k per shard) and the downstream sets' layout, given to snakemake
as a second --configfile.
"""

from __future__ import annotations

import argparse
import re
import tempfile
import statistics
import subprocess
import sys
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
SNAKEMAKE = str(Path(sys.executable).parent / "snakemake")


def job_stats(output: str) -> dict[str, int]:
    """rule -> job count from snakemake's 'Job stats' table (the last one printed), incl. 'total'."""
    tables = re.findall(r"Job stats:\njob\s+count\n[-\s]+\n((?:\S+\s+\d+\n?)+)", output)
    if not tables:
        raise ValueError("no 'Job stats' table in snakemake's output")
    return {name: int(n) for name, n in re.findall(r"^(\S+)\s+(\d+)$", tables[-1], re.M)}


def dry_run(configfiles: list[str], profile: str, forceall: bool, quiet: bool, extra: list[str]) -> tuple[float, str, int]:
    cmd = [SNAKEMAKE, "-n", "--profile", profile, "--configfile", *configfiles]
    if forceall:
        cmd.append("--forceall")
    if quiet:
        cmd += ["--quiet", "rules"]
    cmd += extra
    t0 = time.perf_counter()
    res = subprocess.run(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    return time.perf_counter() - t0, res.stdout, res.returncode


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--configfile", default="config/paper.yaml")
    p.add_argument("--profile", default="profiles/slurm")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--no-forceall", dest="forceall", action="store_false",
                   help="count only the jobs that still need to run")
    p.add_argument("--quiet-rules", action="store_true",
                   help="--quiet rules: skip printing every job (faster for huge grids)")
    p.add_argument("--stand-in-shards", type=int, default=232000,
                   help="shards of the stand-in pool made when the configured one is missing")
    p.add_argument("extra", nargs="*", help="more snakemake arguments (after --)")
    a = p.parse_args(argv)
    if not (ROOT / a.configfile).exists():
        print(f"bench_dag: {a.configfile} does not exist", file=sys.stderr)
        return 1
    from clipscale import config as cs_config
    from clipscale import standin

    with tempfile.TemporaryDirectory(prefix="bench_dag_") as tmp:
        configfiles = [a.configfile]
        cfg = cs_config.validate(yaml.safe_load((ROOT / a.configfile).read_text()))
        source = cfg["pool"]["source"]
        if source != "world" and not (ROOT / source).is_dir():
            configfiles.append(str(standin.write(cfg, tmp, a.stand_in_shards)))
            print(f"pool {source} not found: stand-ins in {tmp} ({a.stand_in_shards} empty shards)")
        return _bench(a, configfiles, list(a.extra))


def _bench(a, configfiles: list[str], extra: list[str]) -> int:
    times, stats = [], None
    for i in range(a.repeats):
        seconds, out, rc = dry_run(configfiles, a.profile, a.forceall, a.quiet_rules, extra)
        if rc != 0:
            print(out[-4000:], file=sys.stderr)
            print(f"bench_dag: snakemake exited {rc}", file=sys.stderr)
            return 1
        stats = job_stats(out)
        times.append(seconds)
        print(f"repeat {i + 1}: {seconds:.2f} s")
    print(f"DAG of {a.configfile} with --profile {a.profile}: median {statistics.median(times):.2f} s "
          f"(min {min(times):.2f}, max {max(times):.2f}, {a.repeats} repeats), {stats['total']} jobs")
    for rule, n in sorted(stats.items(), key=lambda kv: (-kv[1], kv[0])):
        if rule != "total":
            print(f"  {rule:<32} {n:>7}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
