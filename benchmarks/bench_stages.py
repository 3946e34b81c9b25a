"""Where a finished run's time went: job-seconds, CPU seconds and wall time per stage and per rule.

    .venv/bin/python benchmarks/bench_stages.py                 # the workdir here (.)
    .venv/bin/python benchmarks/bench_stages.py /tmp/wd2        # another workdir

Reads every Snakemake benchmark file under WORKDIR/results/benchmarks/ (one TSV per job, written
when the job ends: columns s, h:m:s, max_rss, ..., cpu_time). The rule is the first folder under
results/benchmarks/ (``evaluate/ours/...`` -> evaluate; ``fit/`` and ``figures/`` hold the fit_*
and figure_* rules' files together). Rules are grouped into the pipeline's stages:

    data      make_world, index_pool, subset
    dedup     dedup_*
    train     train, model_profile
    evaluate  evaluate, aggregate_results
    fit       fit*, published_table
    figures   figure*

For each stage and rule it prints the jobs, job-seconds (the sum of their s), CPU seconds (the sum
of cpu_time, where Snakemake recorded it), peak memory (the largest max_rss) and the wall span: from
the earliest job start (file mtime - s) to the latest job end (file mtime), with its offset from
the start of the run; then the whole run's span, how long no job was running in it, and of that
how much fell between two snakemake invocations (their logs in .snakemake/log). Job-seconds over
the wall span is how many jobs ran at once on average. Files left by an earlier run count too: start from an empty results/ (or
pass --since) to see one run.
"""

from __future__ import annotations

import argparse
import csv
import math
import os
import sys
from dataclasses import dataclass
from datetime import datetime
from itertools import pairwise
from pathlib import Path

BENCHMARKS = Path("results") / "benchmarks"
STAGES = ("data", "dedup", "train", "evaluate", "fit", "figures", "other")


@dataclass
class Job:
    """One benchmark file: a job's rule (its first folder), seconds, CPU seconds, when it ended."""

    rule: str
    path: str
    seconds: float
    cpu_seconds: float | None
    max_rss_mb: float | None
    end: float  # the file's mtime (epoch seconds)

    @property
    def start(self) -> float:
        return self.end - self.seconds


def stage_of(rule: str) -> str:
    if rule in ("make_world", "index_pool", "subset"):
        return "data"
    if rule.startswith("dedup"):
        return "dedup"
    if rule in ("train", "model_profile"):
        return "train"
    if rule in ("evaluate", "aggregate_results"):
        return "evaluate"
    if rule.startswith("fit") or rule == "published_table":
        return "fit"
    if rule.startswith("figure"):
        return "figures"
    return "other"


def _number(value: str | None) -> float | None:
    """A benchmark cell as a float; None for "NA", "-", "" or a missing column."""
    if value is None:
        return None
    try:
        x = float(value)
    except ValueError:
        return None
    return None if math.isnan(x) else x


def read_tsv(path: str | Path) -> tuple[float, float | None, float | None]:
    """(seconds, cpu seconds or None, max_rss MB or None) of one benchmark file, summed over its
    rows (a rule with ``benchmark: repeat(..., n)`` writes n)."""
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    if not rows or "s" not in rows[0]:
        raise ValueError(f"{path}: not a Snakemake benchmark file (no 's' column)")
    seconds = sum(_number(r["s"]) or 0.0 for r in rows)
    cpus = [_number(r.get("cpu_time")) for r in rows]
    cpu = sum(c for c in cpus if c is not None) if any(c is not None for c in cpus) else None
    rss = [m for m in (_number(r.get("max_rss")) for r in rows) if m is not None]
    return seconds, cpu, max(rss) if rss else None


def read_jobs(workdir: str | Path = ".", since: float | None = None) -> list[Job]:
    """Every benchmark file under workdir/results/benchmarks (those that ended after ``since``,
    epoch seconds, when given); unreadable files are reported on stderr and left out."""
    root = Path(workdir) / BENCHMARKS
    jobs = []
    for dirpath, _, files in os.walk(root):
        for name in files:
            if not name.endswith(".tsv"):
                continue
            path = Path(dirpath) / name
            rel = path.relative_to(root)
            if len(rel.parts) < 2:
                continue  # a file directly under results/benchmarks belongs to no rule
            end = path.stat().st_mtime
            if since is not None and end < since:
                continue
            try:
                seconds, cpu, rss = read_tsv(path)
            except (ValueError, OSError, csv.Error) as e:
                print(f"bench_stages: skipped {path}: {e}", file=sys.stderr)
                continue
            jobs.append(Job(rel.parts[0], str(rel), seconds, cpu, rss, end))
    return sorted(jobs, key=lambda j: (j.start, j.path))


@dataclass
class Summary:
    name: str
    jobs: int
    job_seconds: float
    cpu_seconds: float | None
    max_rss_mb: float | None
    start: float
    end: float

    @property
    def wall_seconds(self) -> float:
        return self.end - self.start


def summarize(name: str, jobs: list[Job]) -> Summary:
    cpus = [j.cpu_seconds for j in jobs if j.cpu_seconds is not None]
    rss = [j.max_rss_mb for j in jobs if j.max_rss_mb is not None]
    return Summary(name, len(jobs), sum(j.seconds for j in jobs), sum(cpus) if cpus else None,
                   max(rss) if rss else None, min(j.start for j in jobs), max(j.end for j in jobs))


def by_stage(jobs: list[Job]) -> list[tuple[Summary, list[Summary]]]:
    """[(stage summary, [rule summaries])] in pipeline order, rules by their first start."""
    out = []
    for stage in STAGES:
        in_stage = [j for j in jobs if stage_of(j.rule) == stage]
        if not in_stage:
            continue
        rules = sorted({j.rule for j in in_stage})
        rule_sums = sorted((summarize(r, [j for j in in_stage if j.rule == r]) for r in rules),
                           key=lambda s: (s.start, s.name))
        out.append((summarize(stage, in_stage), rule_sums))
    return out


def _union(intervals: list[tuple[float, float]]) -> list[tuple[float, float]]:
    out: list[tuple[float, float]] = []
    for start, end in sorted(intervals):
        if out and start <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], end))
        else:
            out.append((start, end))
    return out


def idle_intervals(jobs: list[Job]) -> list[tuple[float, float]]:
    """The stretches of the run's span in which no job ran (the scheduler, waits, time between
    two snakemake invocations, a machine shared with something else)."""
    busy = _union([(j.start, j.end) for j in jobs])
    return [(a[1], b[0]) for a, b in pairwise(busy)]


def idle_seconds(jobs: list[Job]) -> float:
    return sum(end - start for start, end in idle_intervals(jobs))


def snakemake_runs(workdir: str | Path) -> list[tuple[float, float]]:
    """(start, end) of each snakemake invocation with a log in .snakemake/log (the start from the
    log's name, local time as Snakemake writes it; the end is the log's mtime)."""
    runs = []
    for log in (Path(workdir) / ".snakemake" / "log").glob("*.snakemake.log"):
        try:
            start = datetime.strptime(log.name.split(".snakemake.log")[0], "%Y-%m-%dT%H%M%S.%f")
        except ValueError:
            continue
        runs.append((start.timestamp(), log.stat().st_mtime))
    return sorted(runs)


def _overlap(intervals: list[tuple[float, float]], others: list[tuple[float, float]]) -> float:
    return sum(max(0.0, min(b, d) - max(a, c)) for a, b in intervals for c, d in _union(others))


def _clock(seconds: float) -> str:
    seconds = round(seconds)
    h, rest = divmod(seconds, 3600)
    return f"{h}:{rest // 60:02d}:{rest % 60:02d}"


def _row(s: Summary, t0: float, indent: str) -> str:
    cpu = f"{s.cpu_seconds:,.0f}" if s.cpu_seconds is not None else "-"
    rss = f"{s.max_rss_mb:,.0f}" if s.max_rss_mb is not None else "-"
    parallel = s.job_seconds / s.wall_seconds if s.wall_seconds > 0 else float("nan")
    return (f"{indent + s.name:<26} {s.jobs:>5} {s.job_seconds:>10,.0f} {cpu:>9} {rss:>8} "
            f"{s.wall_seconds:>9,.0f} {parallel:>5.2f} {_clock(s.start - t0):>8} "
            f"{_clock(s.end - t0):>8}")


def report(jobs: list[Job], runs: list[tuple[float, float]] | None = None) -> str:
    """The table; ``runs``: the snakemake invocations (snakemake_runs) to tell the time no job
    ran within one from the time between two."""
    if not jobs:
        return "no benchmark files"
    total = summarize("run", jobs)
    t0 = total.start
    lines = [(f"{'stage / rule':<26} {'jobs':>5} {'job-s':>10} {'cpu-s':>9} {'rss MB':>8} "
              f"{'wall-s':>9} {'par':>5} {'from':>8} {'to':>8}")]
    for stage, rules in by_stage(jobs):
        lines.append(_row(stage, t0, ""))
        lines += [_row(r, t0, "  ") for r in rules]
    lines.append(_row(total, t0, ""))
    idle = idle_intervals(jobs)
    idle_s = sum(b - a for a, b in idle)
    lines.append(f"run: {total.jobs} jobs from {datetime.fromtimestamp(total.start):%Y-%m-%d %H:%M:%S}"
                 f" to {datetime.fromtimestamp(total.end):%H:%M:%S} (wall {_clock(total.wall_seconds)},"
                 f" {total.job_seconds:,.0f} job-seconds); no job running for {idle_s:,.0f} s")
    runs = [r for r in runs or [] if r[1] >= total.start and r[0] <= total.end]
    if runs:
        inside = _overlap(idle, runs)
        lines.append(f"  {len(runs)} snakemake invocation(s) in .snakemake/log overlap the span: "
                     f"{inside:,.0f} s of no job within them, {idle_s - inside:,.0f} s between them")
    lines.append("job-s: sum of the jobs' seconds; cpu-s: their CPU time; rss MB: the largest; "
                 "wall-s: first start to last end; par: job-s / wall-s; from/to: since the run's "
                 "first start")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("workdir", nargs="?", default=".", help="a pipeline working directory (default .)")
    p.add_argument("--since", help="only jobs that ended after this time (ISO 8601, local time)")
    a = p.parse_args(argv)
    root = Path(a.workdir) / BENCHMARKS
    if not root.is_dir():
        print(f"bench_stages: no {root}", file=sys.stderr)
        return 1
    since = datetime.fromisoformat(a.since).timestamp() if a.since else None
    print(report(read_jobs(a.workdir, since), snakemake_runs(a.workdir)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
