"""Aggregation: the tidy results table of every result file, and a log of everything that is
not in it (missing, failed, undefined results, group means left out, the pool's problem shards,
samples training skipped, checkpoints a run set aside)."""

from __future__ import annotations

import datetime
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

import pandas as pd

from clipscale import paths, table
from clipscale.evaluate.plan import Target

log = logging.getLogger("clipscale.evaluate")


@dataclass
class Collected:
    rows: list[dict] = field(default_factory=list)
    lines: list[str] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(
        ("ok", "partial", "failed", "missing", "unreadable"), 0))
    undefined: set = field(default_factory=set)  # (source, checkpoint, dataset, metric)


def _target_of(path: str | Path) -> Target | None:
    """Wildcards from a result path (for the log of a file that cannot be read)."""
    parts = Path(path).with_suffix("").parts
    try:
        i = parts.index("eval")
        source, model, scale, samples, epoch, dataset, task = parts[i + 1:i + 8]
    except ValueError:
        return None
    return Target(source, model, scale, samples, epoch.removeprefix("epoch_"), dataset, task)


def _describe(path: str | Path) -> str:
    t = _target_of(path)
    return t.describe() if t else str(path)


def read_result(path: str | Path) -> dict:
    """A result file, checked for the fields the table needs (ValueError otherwise)."""
    data = json.loads(Path(path).read_text())
    if not isinstance(data, dict):
        raise ValueError("not a JSON object")
    missing = [k for k in ("target", "row", "status", "metrics") if k not in data]
    if missing:
        raise ValueError(f"lacks {missing}")
    return data


def _seed_of(target: Target) -> int | None:
    """The seed index of our run behind an evaluation (grid.seeds: from its samples wildcard,
    "90k-seed2" -> 2, "90k" -> 0); None for a released checkpoint."""
    if target.source != "ours":
        return None
    from clipscale import grid

    return grid.Run.from_wildcards(target.model, target.scale, target.samples).seed


def collect(files: Iterable[str | Path]) -> Collected:
    """Rows of the results table from result files; every file that adds nothing, or less than
    it should, is a line of the log."""
    c = Collected()
    for path in files:
        path = Path(path)
        if not path.exists():
            c.counts["missing"] += 1
            c.lines.append(f"MISSING    {_describe(path)}: {path} does not exist (the evaluation "
                           f"was not run or its job failed: see {paths.LOGS}/evaluate/)")
            continue
        try:
            data = read_result(path)
        except (ValueError, OSError) as e:
            c.counts["unreadable"] += 1
            c.lines.append(f"UNREADABLE {_describe(path)}: {path}: {e}")
            continue
        target = Target(**data["target"])
        status = data["status"]
        c.counts[status if status in c.counts else "failed"] += 1
        for f in data.get("failures", []):
            c.lines.append(f"FAILED     {target.describe()} [{f.get('metric', '*')}]: {f.get('error')}"
                           f"  ({path})")
        for metric, why in sorted(data.get("undefined", {}).items()):
            c.lines.append(f"UNDEFINED  {target.describe()} [{metric}]: {why}")
            c.undefined.add((target.source, data["row"].get("checkpoint"), target.dataset, metric))
        row = data["row"]
        seed = _seed_of(target)
        for metric, value in data["metrics"].items():
            c.rows.append({**{k: row.get(k) for k in table.RESULTS_COLUMNS if k in row},
                           "data_size": row.get("data_size"), "seed": seed, "task": target.task,
                           "dataset": target.dataset, "metric": metric, "value": value})
    return c


def group_coverage(df: pd.DataFrame, config: dict, undefined: set = frozenset()) -> list[str]:
    """Log lines for group means left out because a member lacks a value it should have: not
    for members without that task in the config, nor for metrics a member cannot define
    (top-5 of 4 classes; those are logged as UNDEFINED)."""
    lines = []
    ident = ["source", "model", "data", "samples_seen", "checkpoint", "epoch", "task", "metric"]
    for group, members in table.groups_of(config).items():
        sub = df[df["dataset"].isin(members)]
        if sub.empty or len(set(members)) < 2:
            continue
        for key, part in sub.groupby(ident, dropna=False, sort=True):
            k = dict(zip(ident, key))
            have = set(part["dataset"])
            lacking = sorted(set(members) - have)
            expected = [m for m in members if k["task"] in config["downstream"][m]["tasks"]]
            if set(expected) != set(members):
                continue  # the config does not ask for this task on every member: no mean
            if any((k["source"], k["checkpoint"], m, k["metric"]) in undefined for m in lacking):
                continue
            if lacking:
                lines.append(f"NO MEAN    {k['source']} {k['model']} {k['data']} {k['samples_seen']} "
                             f"epoch {k['epoch']} {k['task']} {k['metric']}: group {group} lacks "
                             f"{lacking}")
    return lines


def build_table(config: dict, files: Iterable[str | Path]) -> tuple[pd.DataFrame, list[str], dict]:
    """The results table of result files (with group means) and the log lines. Fine-tuning
    results have their own table (clipscale.finetune.results): this one never waits on them."""
    c = collect(files)
    if c.rows:
        df = pd.DataFrame(c.rows)
        if not (pd.to_numeric(df["seed"], errors="coerce").fillna(0) > 0).any():
            df = df.drop(columns="seed")  # a single-seed grid: the table as it always was
        df = table.complete(df)
        df = table.validate_table(df, where="(evaluation results)")
        lines = group_coverage(df, config, c.undefined)
        df = table.add_group_means(df, table.groups_of(config))
    else:
        df, lines = table.validate_table(table.empty_table(), where="(no evaluation results)"), []
    return df, c.lines + lines, c.counts


def data_lines(run_records: Iterable[str | Path] = (), pool_index: str | Path | None = None) -> list[str]:
    """Log lines for the data behind the table: pool shards whose tar and parquet disagree (or
    that are truncated or hold unreadable samples), the samples img2dataset did not download,
    and samples each training run skipped."""
    from clipscale.subsets import pool_missing, pool_problems

    lines = []
    if pool_index and Path(pool_index).exists():
        index = pd.read_parquet(pool_index)
        lines += [f"POOL       {line}" for line in pool_problems(index)]
        # img2dataset's failed downloads: the pool's total (not a problem: reported, not warned of)
        lines += [f"DOWNLOAD   {line}" for line in pool_missing(index, shards=0)]
    for path in run_records:
        try:
            record = json.loads(Path(path).read_text())
        except (OSError, json.JSONDecodeError) as e:
            lines.append(f"RUN        {path}: unreadable run record: {e}")
            continue
        skipped = record.get("skipped_samples") or {}
        if skipped.get("total"):
            reasons = ", ".join(f"{k}: {v}" for k, v in sorted(skipped.get("by_reason", {}).items()))
            lines.append(f"SKIPPED    {record['model']}/{record['scale']}/{record['samples_seen_label']}: "
                         f"training skipped {skipped['total']} samples ({reasons or 'reasons not recorded'}); "
                         f"see {path}")
        for aside in record.get("rejected_checkpoints", []):
            lines.append(f"CHECKPOINT {record['model']}/{record['scale']}/{record['samples_seen_label']}: "
                         f"{aside.get('file')} moved to {aside.get('moved_to')}: {aside.get('reason')}")
    return lines


def aggregate(config: dict, files: Iterable[str | Path], out_table: str | Path = paths.RESULTS_TABLE,
              out_csv: str | Path = paths.RESULTS_CSV, out_log: str | Path = paths.RESULTS_LOG, *,
              run_records: Iterable[str | Path] = (), pool_index: str | Path | None = None) -> pd.DataFrame:
    """Write the results table (parquet and CSV) and its log; never stops on a missing file.
    The log also lists the pool's problem shards and the samples training skipped."""
    files = [str(f) for f in files]
    df, lines, counts = build_table(config, files)
    lines = lines + data_lines(run_records, pool_index)
    table.write_table(df, out_table)
    table.write_table(df, out_csv)
    by_source = df["source"].value_counts().to_dict() if len(df) else {}
    groups = set(table.groups_of(config))
    n_group = int(df["dataset"].isin(groups).sum()) if len(df) else 0
    header = [
        f"# clipscale results log: what is and is not in {out_table} ({datetime.datetime.now():%Y-%m-%d %H:%M})",
        f"# evaluations expected: {len(files)}; " + ", ".join(f"{k}: {v}" for k, v in counts.items()),
        f"# rows: {len(df)} ({', '.join(f'{k}: {v}' for k, v in by_source.items()) or 'none'}), "
        f"of which group means: {n_group}",
        "# A FAILED evaluation's result file records why; delete it and re-run the workflow to retry.",
        "# MISSING: no result file; UNDEFINED: metric not defined for this set (no row);",
        "# NO MEAN: a group average left out because a member set has no value;",
        "# POOL: a pool shard whose tar and parquet disagree, truncated or with unreadable samples;",
        "# DOWNLOAD: samples img2dataset listed and did not write (a URL that failed): not in the pool;",
        "# SKIPPED: samples a training run skipped; CHECKPOINT: a checkpoint a run set aside.",
        f"# Fine-tuning (finetune.enabled) has its own table and log: {paths.FINETUNE_TABLE}, {paths.FINETUNE_LOG}.",
    ]
    Path(out_log).parent.mkdir(parents=True, exist_ok=True)
    Path(out_log).write_text("\n".join(header + (lines or ["(every expected evaluation is in the table)"])) + "\n")
    problems = counts["missing"] + counts["unreadable"] + counts["failed"] + counts["partial"]
    (log.warning if problems else log.info)(
        "results table %s: %d rows from %d evaluations (%s); see %s", out_table, len(df), len(files),
        ", ".join(f"{k} {v}" for k, v in counts.items()), out_log)
    return df
